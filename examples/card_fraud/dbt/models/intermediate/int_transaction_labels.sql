{#-
    The fraud label of every charged-back transaction, with the moment it became known.
    Only `fraud` chargebacks label a transaction; several chargebacks for one transaction
    collapse to the first report (the label was known from then on).
-#}
with

chargebacks as (

    select * from {{ ref('stg_raw__chargebacks') }}

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
