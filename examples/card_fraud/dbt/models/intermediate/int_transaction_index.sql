{#-
    Where each transaction sits: its merchant category and event day, one narrow row per
    transaction. The category fraud rate places a day's window of labels with it instead of
    re-reading (and de-duplicating) the window's raw rows.
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
        transaction_id,
        merchant_category,
        cast(event_ts as date) as event_date

    from {{ ref('stg_raw__transactions') }}
    {%- if since %}
    where event_ts >= {{ day_start_literal(since) }}
    {%- endif %}

),

final as (

    select * from transactions

)

select * from final
