{#-
    Features + label for every transaction whose label has matured.

    as_of is the end (exclusive) of the latest loaded batch_date of either feed, or var('as_of')
    when set. A transaction is in the set only if event_ts < as_of - label_maturity_days: by then
    every chargeback it will ever get has (by contract) arrived, so is_fraud = 0 means "not
    fraud", not "not yet reported". is_fraud = 1 iff a fraud chargeback was reported by as_of.

    Incremental (one partition per batch_date): a run from day D (var rebuild_from) rebuilds the
    partitions from D - label_maturity_days on (the rows that matured with D) and any older one
    whose labels changed (macros/training_set.sql); an as_of override or no rebuild_from rebuilds
    every partition. tests/dbt/test_incremental.py holds it equal to a full refresh.
-#}
{%- set maturity_days = var('label_maturity_days') | int -%}
{%- set as_of_override = var('as_of', none) -%}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='batch_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_training_set(var('label_maturity_days') | int) }}",
) }}
-- depends_on: {{ ref('stg_raw__chargebacks') }}
{%- set first = training_set_first_partition(maturity_days) %}
{%- if first %}
{%- set latest = latest_loaded_batch(incremental_since()) %}
{%- endif %}
with

features as (

    select * from {{ ref('ml_transaction_features') }}
    {%- if first %}
    where batch_date >= {{ day_literal(first) }}
    {%- endif %}

),

labels as (

    select * from {{ ref('int_transaction_labels') }}

),

loaded_batches as (

    select batch_date from {{ ref('stg_raw__transactions') }}
    union all
    select batch_date from {{ ref('stg_raw__chargebacks') }}

),

as_of as (

    {%- if as_of_override %}
    select cast('{{ as_of_override }}' as {{ dbt.type_timestamp() }}) as as_of_ts
    {%- elif first %}
    select {{ day_start_literal(latest, 1) if latest else 'cast(null as ' ~ dbt.type_timestamp() ~ ')' }} as as_of_ts
    {%- else %}
    select cast({{ dbt.dateadd('day', 1, 'max(batch_date)') }} as {{ dbt.type_timestamp() }}) as as_of_ts
    from loaded_batches
    {%- endif %}

),

maturity as (

    select
        as_of_ts,
        cast({{ dbt.dateadd('day', -maturity_days, 'as_of_ts') }} as {{ dbt.type_timestamp() }}) as matured_before_ts

    from as_of

),

labelled as (

    select
        features.*,
        case
            when labels.label_reported_at <= maturity.as_of_ts then labels.label_reported_at
        end as label_reported_at

    from features
    cross join maturity
    left join labels
        on features.transaction_id = labels.transaction_id
    where features.event_ts < maturity.matured_before_ts

),

final as (

    select
        transaction_id,
        customer_id,
        event_ts,
        batch_date,
        channel,
        merchant_category,
        country,
        customer_home_country,
        country_bucket,
        amount,
        log_amount,
        amount_band,
        hour_of_day,
        is_weekend,
        tx_count_1h,
        tx_count_24h,
        amount_to_customer_avg,
        is_new_country,
        is_new_device,
        category_fraud_rate,
        case when label_reported_at is not null then 1 else 0 end as is_fraud,
        label_reported_at

    from labelled

)

select * from final
