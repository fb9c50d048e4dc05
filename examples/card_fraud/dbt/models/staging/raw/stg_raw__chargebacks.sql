{#-
    One row per chargeback. Exact re-deliveries (same chargeback_id and content) are collapsed to
    the first delivery; conflicting rows under one chargeback_id are kept and fail `unique`.
-#}
with

source as (

    select * from {{ source('raw', 'chargebacks') }}

),

renamed as (

    select
        cast(chargeback_id as {{ dbt.type_string() }}) as chargeback_id,
        cast(transaction_id as {{ dbt.type_string() }}) as transaction_id,
        cast(reported_at as {{ dbt.type_timestamp() }}) as reported_at,
        cast(reason_code as {{ dbt.type_string() }}) as reason_code,
        cast(batch_date as date) as batch_date,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by chargeback_id, transaction_id, reported_at, reason_code
            order by batch_date, loaded_at
        ) as delivery_rank

    from renamed

),

final as (

    select
        chargeback_id,
        transaction_id,
        reported_at,
        reason_code,
        batch_date,
        loaded_at

    from deduplicated
    where delivery_rank = 1

)

select * from final
