{#-
    Per-transaction customer behaviour, point-in-time correct: every window looks only backwards
    from the transaction's own event_ts (RANGE frames ending at CURRENT ROW), so adding later
    transactions never changes an earlier row.

    - tx_count_1h / tx_count_24h: the customer's transactions in [event_ts - 1h, event_ts] and
      [event_ts - 24h, event_ts], this one included; a transaction exactly 1h (24h) earlier counts.
    - amount_to_customer_avg: amount / the customer's average amount over [event_ts - N days, event_ts]
      (N = var('customer_amount_window_days'), 30)
      excluding this transaction; 1.0 when there is no such history. Amounts are summed as exact
      decimals (macros/incremental.sql, exact_amount), so the incremental and full paths agree to the bit.
    - is_new_country / is_new_device: 1 when no earlier transaction of the customer used this
      country / device.
    Transactions of one customer with the identical timestamp are peers of each other in a RANGE
    frame and see each other; with microsecond timestamps this is a negligible, documented edge.

    Incremental (one partition per batch_date, see macros/incremental.sql): a rebuild from day D
    reads the rows of D on, the day before D (velocity windows), the partial Nth day back (the
    average's window edge) and bounded per-customer state: int_customer_daily_amounts (the full
    days of the N-day window) and int_customer_first_seen (first-seen countries and devices). A
    full build computes the same values with the window functions below over all rows; the
    incremental test (tests/dbt/test_incremental.py) holds the two equal row for row.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='batch_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_partitions('batch_date') }}",
) }}
-- depends_on: {{ ref('int_customer_daily_amounts') }}
-- depends_on: {{ ref('int_customer_first_seen') }}
{%- set avg_days = var('customer_amount_window_days') | int -%}
{%- if avg_days < 1 -%}
    {{ exceptions.raise_compiler_error(
        "invalid var customer_amount_window_days: need >= 1 (got " ~ avg_days ~ "); fix it in --vars or dbt_project.yml"
    ) }}
{%- endif %}
{%- set since = incremental_since() %}
{%- if since %}
{%- set last = last_event_day(ref('stg_raw__transactions'), 'event_ts', since) %}
with

rebuilt as (

    select
        transaction_id,
        customer_id,
        event_ts,
        cast(event_ts as date) as event_date,
        batch_date,
        amount,
        country,
        device_id

    from {{ ref('stg_raw__transactions') }}
    where event_ts >= {{ day_start_literal(since) }}

),

velocity_context as (

    select
        transaction_id,
        customer_id,
        event_ts

    from {{ ref('stg_raw__transactions') }}
    where event_ts >= {{ day_start_literal(since, -1) }}

),

velocity as (

    select
        transaction_id,
        event_ts,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '1 hour' preceding and current row
        ) as tx_count_1h,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '24 hours' preceding and current row
        ) as tx_count_24h

    from velocity_context

),

{#- the window's first day back: only its rows at or after event_ts - N days are in a transaction's window #}
window_edge_rows as (

    select
        customer_id,
        event_ts,
        amount

    from {{ ref('stg_raw__transactions') }}
    where event_ts >= {{ day_start_literal(since, -avg_days) }}
        and event_ts < {{ day_start_literal(last, -(avg_days - 1)) }}

),

full_days as (

    select
        customer_id,
        event_date,
        amount_sum,
        transaction_count

    from {{ ref('int_customer_daily_amounts') }}
    where event_date >= {{ day_literal(since, -(avg_days - 1)) }}
        and event_date < {{ day_literal(last) }}

),

windows as (

    select
        transaction_id,
        customer_id,
        event_ts,
        event_date,
        cast({{ dbt.dateadd('day', -(avg_days - 1), 'event_date') }} as date) as first_full_day,
        cast(cast({{ dbt.dateadd('day', -(avg_days - 1), 'event_date') }} as date) as {{ dbt.type_timestamp() }})
            as first_full_day_start,
        event_ts - interval '{{ avg_days }} days' as window_start_ts

    from rebuilt

),

prior_full_days as (

    select
        windows.transaction_id,
        sum(full_days.amount_sum) as amount_sum,
        sum(full_days.transaction_count) as transaction_count

    from windows
    inner join full_days
        on full_days.customer_id = windows.customer_id
        and full_days.event_date >= windows.first_full_day
        and full_days.event_date < windows.event_date
    group by windows.transaction_id

),

prior_window_edge as (

    select
        windows.transaction_id,
        sum({{ exact_amount('window_edge_rows.amount') }}) as amount_sum,
        count(*) as transaction_count

    from windows
    inner join window_edge_rows
        on window_edge_rows.customer_id = windows.customer_id
        and window_edge_rows.event_ts >= windows.window_start_ts
        and window_edge_rows.event_ts < windows.first_full_day_start
    group by windows.transaction_id

),

prior_same_day as (

    select
        transaction_id,

        sum({{ exact_amount('amount') }}) over (
            partition by customer_id, event_date
            order by event_ts
            range between unbounded preceding and current row
            exclude current row
        ) as amount_sum,

        count(*) over (
            partition by customer_id, event_date
            order by event_ts
            range between unbounded preceding and current row
            exclude current row
        ) as transaction_count

    from rebuilt

),

prior_amounts as (

    select
        rebuilt.transaction_id,
        coalesce(prior_full_days.amount_sum, 0)
            + coalesce(prior_window_edge.amount_sum, 0)
            + coalesce(prior_same_day.amount_sum, 0) as amount_sum,
        coalesce(cast(prior_full_days.transaction_count as bigint), 0)
            + coalesce(cast(prior_window_edge.transaction_count as bigint), 0)
            + coalesce(cast(prior_same_day.transaction_count as bigint), 0) as transaction_count

    from rebuilt
    left join prior_full_days
        on rebuilt.transaction_id = prior_full_days.transaction_id
    left join prior_window_edge
        on rebuilt.transaction_id = prior_window_edge.transaction_id
    left join prior_same_day
        on rebuilt.transaction_id = prior_same_day.transaction_id

),

first_seen as (

    select * from {{ ref('int_customer_first_seen') }}

),

windowed as (

    select
        rebuilt.transaction_id,
        rebuilt.batch_date,
        rebuilt.event_ts,
        rebuilt.amount,
        velocity.tx_count_1h,
        velocity.tx_count_24h,
        case
            when prior_amounts.transaction_count > 0
                then cast(prior_amounts.amount_sum as double precision) / prior_amounts.transaction_count
        end as prior_avg_amount_30d,
        first_country.first_seen_ts as country_first_seen_ts,
        first_device.first_seen_ts as device_first_seen_ts

    from rebuilt
    inner join velocity
        on rebuilt.transaction_id = velocity.transaction_id
    inner join prior_amounts
        on rebuilt.transaction_id = prior_amounts.transaction_id
    left join first_seen as first_country
        on first_country.customer_id = rebuilt.customer_id
        and first_country.attribute = 'country'
        and first_country.attribute_value = rebuilt.country
    left join first_seen as first_device
        on first_device.customer_id = rebuilt.customer_id
        and first_device.attribute = 'device'
        and first_device.attribute_value = rebuilt.device_id

),
{%- else %}
with

transactions as (

    select
        transaction_id,
        customer_id,
        event_ts,
        batch_date,
        amount,
        country,
        device_id

    from {{ ref('stg_raw__transactions') }}

),

windowed as (

    select
        transaction_id,
        batch_date,
        event_ts,
        amount,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '1 hour' preceding and current row
        ) as tx_count_1h,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '24 hours' preceding and current row
        ) as tx_count_24h,

        sum({{ exact_amount('amount') }}) over (
            partition by customer_id
            order by event_ts
            range between interval '{{ avg_days }} days' preceding and current row
            exclude current row
        ) as prior_amount_sum,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '{{ avg_days }} days' preceding and current row
            exclude current row
        ) as prior_transaction_count,

        min(event_ts) over (
            partition by customer_id, country
            order by event_ts
            range between unbounded preceding and current row
        ) as country_first_seen_ts,

        min(event_ts) over (
            partition by customer_id, device_id
            order by event_ts
            range between unbounded preceding and current row
        ) as device_first_seen_ts

    from transactions

),

averaged as (

    select
        *,
        case
            when prior_transaction_count > 0
                then cast(prior_amount_sum as double precision) / prior_transaction_count
        end as prior_avg_amount_30d

    from windowed

),
{%- endif %}

final as (

    select
        transaction_id,
        batch_date,
        cast(tx_count_1h as bigint) as tx_count_1h,
        cast(tx_count_24h as bigint) as tx_count_24h,
        cast(
            case
                when prior_avg_amount_30d is null or prior_avg_amount_30d <= 0 then 1.0
                else amount / prior_avg_amount_30d
            end as double precision
        ) as amount_to_customer_avg,
        cast(case when country_first_seen_ts = event_ts then 1 else 0 end as integer) as is_new_country,
        cast(case when device_first_seen_ts = event_ts then 1 else 0 end as integer) as is_new_device

    {%- if since %}
    from windowed
    {%- else %}
    from averaged
    {%- endif %}

)

select * from final
