{#-
    The model's feature table: one row per transaction of every loaded batch, every feature
    computed only from what was known at the transaction's event_ts (see the intermediate models).
    Columns are the contract in docs/contracts.md; the model config lists them as numeric /
    categorical features. The casts in `final` are the serving contract too: every numeric
    feature is DOUBLE and every categorical VARCHAR, the types of the model's logged input
    signature, so `mlflow.pyfunc` scores published rows as they are (an int64 count would be
    refused: MLflow will not "safely" convert int64 to float64).

    Incremental: one partition per batch_date; a rebuild from day D (var rebuild_from) replaces the
    partitions of D and every later day (macros/incremental.sql).
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='batch_date',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_partitions('batch_date') }}",
) }}
{%- set since = incremental_since() %}
with

transactions as (

    select * from {{ ref('stg_raw__transactions') }}
    {%- if since %}
    where event_ts >= {{ day_start_literal(since) }}
    {%- endif %}

),

customer_behaviour as (

    select * from {{ ref('int_customer_behaviour_features') }}
    {%- if since %}
    where batch_date >= {{ day_literal(since) }}
    {%- endif %}

),

category_fraud_rates as (

    select * from {{ ref('int_category_fraud_rates_daily') }}
    {%- if since %}
    where feature_date >= {{ day_literal(since) }}
    {%- endif %}

),

transaction_attributes as (

    select
        transaction_id,
        customer_id,
        event_ts,
        cast(event_ts as date) as event_date,
        batch_date,
        channel,
        merchant_category,
        country,
        customer_home_country,
        case when country = customer_home_country then 'domestic' else 'foreign' end as country_bucket,
        amount,
        ln(1 + amount) as log_amount,
        case
            when amount < 10 then 'lt_10'
            when amount < 100 then '10_100'
            when amount < 500 then '100_500'
            else 'ge_500'
        end as amount_band,
        cast(extract(hour from event_ts) as integer) as hour_of_day,
        case
            when cast(extract(dow from event_ts) as integer) in (0, 6) then 1
            else 0
        end as is_weekend

    from transactions

),

final as (

    select
        transaction_attributes.transaction_id,
        transaction_attributes.customer_id,
        transaction_attributes.event_ts,
        transaction_attributes.batch_date,
        cast(transaction_attributes.channel as varchar) as channel,
        cast(transaction_attributes.merchant_category as varchar) as merchant_category,
        transaction_attributes.country,
        transaction_attributes.customer_home_country,
        transaction_attributes.country_bucket,
        cast(transaction_attributes.amount as double precision) as amount,
        cast(transaction_attributes.log_amount as double precision) as log_amount,
        transaction_attributes.amount_band,
        cast(transaction_attributes.hour_of_day as double precision) as hour_of_day,
        cast(transaction_attributes.is_weekend as double precision) as is_weekend,
        cast(customer_behaviour.tx_count_1h as double precision) as tx_count_1h,
        cast(customer_behaviour.tx_count_24h as double precision) as tx_count_24h,
        cast(customer_behaviour.amount_to_customer_avg as double precision) as amount_to_customer_avg,
        cast(customer_behaviour.is_new_country as double precision) as is_new_country,
        cast(customer_behaviour.is_new_device as double precision) as is_new_device,
        cast(category_fraud_rates.category_fraud_rate as double precision) as category_fraud_rate

    from transaction_attributes
    inner join customer_behaviour
        on transaction_attributes.transaction_id = customer_behaviour.transaction_id
    left join category_fraud_rates
        on transaction_attributes.event_date = category_fraud_rates.feature_date
        and transaction_attributes.merchant_category = category_fraud_rates.merchant_category

)

select * from final
