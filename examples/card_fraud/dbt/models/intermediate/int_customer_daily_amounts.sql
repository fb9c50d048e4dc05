{#-
    Per-customer state for the running amount average: the (exact decimal) sum and count of each customer's
    transaction amounts per event day. A day's amount_to_customer_avg reads the 29 full days before
    it from here (one row per active customer-day) instead of every raw row of the window.
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
        customer_id,
        cast(event_ts as date) as event_date,
        amount

    from {{ ref('stg_raw__transactions') }}
    {%- if since %}
    where event_ts >= {{ day_start_literal(since) }}
    {%- endif %}

),

final as (

    select
        customer_id,
        event_date,
        sum({{ exact_amount('amount') }}) as amount_sum,
        count(*) as transaction_count

    from transactions
    group by customer_id, event_date

)

select * from final
