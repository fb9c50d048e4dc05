{#-
    Per-category state for the category fraud rate: the number of transactions of each merchant
    category per event day, so a day's rate reads the window's day counts, not its raw rows.
    Incremental: one partition per event_date (see macros/incremental.sql).
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='event_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_partitions('event_date') }}",
) }}
{%- set since = incremental_since() %}
with

transactions as (

    select
        merchant_category,
        cast(event_ts as date) as event_date

    from {{ ref('stg_raw__transactions') }}
    {%- if since %}
    where event_ts >= {{ day_start_literal(since) }}
    {%- endif %}

),

final as (

    select
        merchant_category,
        event_date,
        count(*) as transaction_count

    from transactions
    group by merchant_category, event_date

)

select * from final
