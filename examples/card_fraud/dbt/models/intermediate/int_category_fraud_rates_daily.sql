{#-
    Merchant-category fraud rate as known at the START of each day a category is traded
    (feature_date), so every transaction of that day only sees labels reported before it.

    For feature_date D, with lag L = var('label_maturity_days') and window W =
    var('category_fraud_rate_window_days'):
    - population: the category's transactions with event date in [D - L - W, D - L). They are at
      least L days old, so their labels have (by the maturity contract) arrived; using younger
      transactions would put not-yet-labelled frauds in the denominator and bias the rate down.
    - frauds: those transactions with a fraud label reported strictly before D (the leakage guard:
      a label reported on or after D is never used, whatever L is).
    - additive smoothing toward the global rate: (frauds + k * global) / (transactions + k), with
      k = var('category_fraud_rate_smoothing'); the global rate over the same population is itself
      smoothed toward var('category_fraud_rate_prior'), so a category (or a day) without history
      gets the prior instead of 0 or a division by zero.

    Incremental (one partition per feature_date, see macros/incremental.sql): a rebuild from day D
    computes the feature days from D on, reading the window's per-day category counts from
    int_category_daily_volume and only the window's transactions to place the labels.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='feature_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_partitions('feature_date') }}",
) }}
-- depends_on: {{ ref('int_category_daily_volume') }}
-- depends_on: {{ ref('int_transaction_index') }}
{%- set lag_days = var('label_maturity_days') | int -%}
{%- set window_days = var('category_fraud_rate_window_days') | int -%}
{%- set k = var('category_fraud_rate_smoothing') | float -%}
{%- set prior = var('category_fraud_rate_prior') | float -%}
{%- if k <= 0 or prior < 0 or prior > 1 or window_days < 1 or lag_days < 0 -%}
    {{ exceptions.raise_compiler_error(
        "invalid category_fraud_rate vars: need category_fraud_rate_smoothing > 0 (got " ~ k
        ~ "), 0 <= category_fraud_rate_prior <= 1 (got " ~ prior
        ~ "), category_fraud_rate_window_days >= 1 (got " ~ window_days
        ~ ") and label_maturity_days >= 0 (got " ~ lag_days ~ "); fix them in --vars or dbt_project.yml"
    ) }}
{%- endif %}
{%- set since = incremental_since() %}
{%- if since %}
{%- set last = last_event_day(ref('stg_raw__transactions'), 'event_ts', since) %}
{%- endif %}
with

transactions as (

    {%- if since %}
    {#- the feature days rebuilt and the windows they read: [D - L - W, last day] #}
    select
        transaction_id,
        merchant_category,
        event_date

    from {{ ref('int_transaction_index') }}
    where event_date >= {{ day_literal(since, -(lag_days + window_days)) }}
    {%- else %}
    select
        transaction_id,
        merchant_category,
        cast(event_ts as date) as event_date

    from {{ ref('stg_raw__transactions') }}
    {%- endif %}

),

labels as (

    select * from {{ ref('int_transaction_labels') }}

),

feature_days as (

    select distinct
        event_date as feature_date,
        merchant_category

    from transactions
    {%- if since %}
    where event_date >= {{ day_literal(since) }}
    {%- endif %}

),

as_of_days as (

    select distinct
        feature_date,
        cast({{ dbt.dateadd('day', -(lag_days + window_days), 'feature_date') }} as date) as window_start_date,
        cast({{ dbt.dateadd('day', -lag_days, 'feature_date') }} as date) as window_end_date

    from feature_days

),

daily_volume as (

    {%- if since %}
    select
        merchant_category,
        event_date,
        transaction_count

    from {{ ref('int_category_daily_volume') }}
    where event_date >= {{ day_literal(since, -(lag_days + window_days)) }}
        and event_date < {{ day_literal(last, -lag_days) }}
    {%- else %}
    select
        merchant_category,
        event_date,
        count(*) as transaction_count

    from transactions
    group by merchant_category, event_date
    {%- endif %}

),

labelled_frauds as (

    select
        transactions.merchant_category,
        transactions.event_date,
        labels.label_reported_at

    from transactions
    inner join labels
        on transactions.transaction_id = labels.transaction_id

),

window_volume as (

    select
        as_of_days.feature_date,
        daily_volume.merchant_category,
        sum(daily_volume.transaction_count) as transaction_count

    from as_of_days
    inner join daily_volume
        on daily_volume.event_date >= as_of_days.window_start_date
        and daily_volume.event_date < as_of_days.window_end_date
    group by as_of_days.feature_date, daily_volume.merchant_category

),

window_frauds as (

    select
        as_of_days.feature_date,
        labelled_frauds.merchant_category,
        count(*) as fraud_count

    from as_of_days
    inner join labelled_frauds
        on labelled_frauds.event_date >= as_of_days.window_start_date
        and labelled_frauds.event_date < as_of_days.window_end_date
        and labelled_frauds.label_reported_at < cast(as_of_days.feature_date as {{ dbt.type_timestamp() }})
    group by as_of_days.feature_date, labelled_frauds.merchant_category

),

category_window as (

    select
        window_volume.feature_date,
        window_volume.merchant_category,
        window_volume.transaction_count,
        coalesce(window_frauds.fraud_count, 0) as fraud_count

    from window_volume
    left join window_frauds
        on window_volume.feature_date = window_frauds.feature_date
        and window_volume.merchant_category = window_frauds.merchant_category

),

global_window as (

    select
        feature_date,
        sum(transaction_count) as transaction_count,
        sum(fraud_count) as fraud_count

    from category_window
    group by feature_date

),

global_rates as (

    select
        as_of_days.feature_date,
        as_of_days.window_start_date,
        as_of_days.window_end_date,
        coalesce(global_window.transaction_count, 0) as global_transaction_count,
        coalesce(global_window.fraud_count, 0) as global_fraud_count,
        (cast(coalesce(global_window.fraud_count, 0) as double precision) + {{ k * prior }})
            / (cast(coalesce(global_window.transaction_count, 0) as double precision) + {{ k }})
            as global_fraud_rate

    from as_of_days
    left join global_window
        on as_of_days.feature_date = global_window.feature_date

),

final as (

    select
        feature_days.feature_date,
        feature_days.merchant_category,
        global_rates.window_start_date,
        global_rates.window_end_date,
        coalesce(category_window.transaction_count, 0) as category_transaction_count,
        coalesce(category_window.fraud_count, 0) as category_fraud_count,
        global_rates.global_transaction_count,
        global_rates.global_fraud_count,
        global_rates.global_fraud_rate,
        (
            cast(coalesce(category_window.fraud_count, 0) as double precision)
            + {{ k }} * global_rates.global_fraud_rate
        ) / (cast(coalesce(category_window.transaction_count, 0) as double precision) + {{ k }})
            as category_fraud_rate

    from feature_days
    inner join global_rates
        on feature_days.feature_date = global_rates.feature_date
    left join category_window
        on feature_days.feature_date = category_window.feature_date
        and feature_days.merchant_category = category_window.merchant_category

)

select * from final
