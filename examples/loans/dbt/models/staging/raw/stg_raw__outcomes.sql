{#-
    One row per delivered outcome, typed. Exact re-deliveries collapse to the first delivery;
    `reported_at` is the moment the outcome became known.
-#}
with

source as (

    select * from {{ source('raw', 'outcomes') }}

),

renamed as (

    select
        cast(outcome_id as {{ dbt.type_string() }}) as outcome_id,
        cast(application_id as {{ dbt.type_string() }}) as application_id,
        cast(reported_at as {{ dbt.type_timestamp() }}) as reported_at,
        cast(outcome as {{ dbt.type_string() }}) as outcome,
        cast(batch_date as date) as batch_date,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by outcome_id, application_id, reported_at, outcome
            order by batch_date, loaded_at
        ) as delivery_rank

    from renamed

),

final as (

    select
        outcome_id,
        application_id,
        reported_at,
        outcome,
        batch_date,
        loaded_at

    from deduplicated
    where delivery_rank = 1

)

select * from final
