{#-
    The fraud label of every charged-back transaction, with the moment it became known.
    Only `fraud` chargebacks label a transaction; several chargebacks for one transaction
    collapse to the first report (the label was known from then on).

    Incremental: a run from day D (var rebuild_from) recomputes the transactions with a chargeback
    reported from D on (reading those transactions' chargebacks only) and drops the labels first
    reported from D on that no chargeback supports any more (a re-delivered day withdrew them).
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='transaction_id',
    on_schema_change='fail',
    pre_hook="{{ delete_rebuilt_labels() }}",
) }}
{%- set since = incremental_since() %}
with

chargebacks as (

    select * from {{ ref('stg_raw__chargebacks') }}
    {%- if since %}
    where transaction_id in (
        select transaction_id from {{ ref('stg_raw__chargebacks') }}
        where reported_at >= {{ day_start_literal(since) }}
    )
    {%- endif %}

),

fraud_chargebacks as (

    select
        transaction_id,
        reported_at

    from chargebacks
    where reason_code = 'fraud'

),

final as (

    select
        transaction_id,
        min(reported_at) as label_reported_at,
        count(*) as chargeback_count

    from fraud_chargebacks
    group by transaction_id

)

select * from final
