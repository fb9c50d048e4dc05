{#-
    Per-customer state for the first-seen flags: one row per (customer, attribute, value) with the
    moment the customer first used that country or device. is_new_country / is_new_device of a day
    look their pair up here instead of scanning the customer's whole history.
    Incremental: a rebuild from day D drops the pairs first seen on or after D (the pre-hook) and
    re-adds, from the rows of D on, the pairs not seen before D.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='first_seen_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_partitions('first_seen_date') }}",
) }}
{%- set since = incremental_since() %}
with

transactions as (

    select
        customer_id,
        country,
        device_id,
        event_ts

    from {{ ref('stg_raw__transactions') }}
    {%- if since %}
    where event_ts >= {{ day_start_literal(since) }}
    {%- endif %}

),

pairs as (

    select
        customer_id,
        'country' as attribute,
        country as attribute_value,
        min(event_ts) as first_seen_ts

    from transactions
    group by customer_id, country

    union all

    select
        customer_id,
        'device' as attribute,
        device_id as attribute_value,
        min(event_ts) as first_seen_ts

    from transactions
    group by customer_id, device_id

),

final as (

    select
        pairs.customer_id,
        pairs.attribute,
        pairs.attribute_value,
        pairs.first_seen_ts,
        cast(pairs.first_seen_ts as date) as first_seen_date

    from pairs
    {%- if since %}
    where not exists (
        select 1
        from {{ this }} as seen
        where seen.customer_id = pairs.customer_id
            and seen.attribute = pairs.attribute
            and seen.attribute_value = pairs.attribute_value
    )
    {%- endif %}

)

select * from final
