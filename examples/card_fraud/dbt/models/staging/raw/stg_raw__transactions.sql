{#-
    One row per transaction, typed and named for the rest of the project.
    Exact re-deliveries (the same transaction with identical content in two batches or twice in
    one batch) are collapsed to the first delivery: that is safe because nothing is lost.
    Rows that share a transaction_id but differ in content are NOT collapsed: picking one would
    hide a source defect, so they flow through and fail the `unique` test on transaction_id.
-#}
with

source as (

    select * from {{ source('raw', 'transactions') }}

),

renamed as (

    select
        cast(transaction_id as {{ dbt.type_string() }}) as transaction_id,
        cast(event_ts as {{ dbt.type_timestamp() }}) as event_ts,
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(customer_home_country as {{ dbt.type_string() }}) as customer_home_country,
        cast(merchant_id as {{ dbt.type_string() }}) as merchant_id,
        cast(merchant_category as {{ dbt.type_string() }}) as merchant_category,
        cast(channel as {{ dbt.type_string() }}) as channel,
        cast(country as {{ dbt.type_string() }}) as country,
        cast(device_id as {{ dbt.type_string() }}) as device_id,
        cast(amount as double precision) as amount,
        cast(currency as {{ dbt.type_string() }}) as currency,
        cast(batch_date as date) as batch_date,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by
                transaction_id, event_ts, customer_id, customer_home_country, merchant_id,
                merchant_category, channel, country, device_id, amount, currency
            order by batch_date, loaded_at
        ) as delivery_rank

    from renamed

),

final as (

    select
        transaction_id,
        event_ts,
        customer_id,
        customer_home_country,
        merchant_id,
        merchant_category,
        channel,
        country,
        device_id,
        amount,
        currency,
        batch_date,
        loaded_at

    from deduplicated
    where delivery_rank = 1

)

select * from final
