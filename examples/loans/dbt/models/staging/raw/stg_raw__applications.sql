{#-
    One row per application, typed. Exact re-deliveries (the same application with identical
    content in two drops) collapse to the first delivery; rows sharing an application_id with
    different content are kept, so the `unique` test fails loudly instead of hiding the defect.
-#}
with

source as (

    select * from {{ source('raw', 'applications') }}

),

renamed as (

    select
        cast(application_id as {{ dbt.type_string() }}) as application_id,
        cast(applied_at as {{ dbt.type_timestamp() }}) as applied_at,
        cast(applicant_id as {{ dbt.type_string() }}) as applicant_id,
        cast(annual_income as double precision) as annual_income,
        cast(loan_amount as double precision) as loan_amount,
        cast(term_months as integer) as term_months,
        cast(debt_to_income as double precision) as debt_to_income,
        cast(credit_score as integer) as credit_score,
        cast(delinquencies_2y as integer) as delinquencies_2y,
        cast(employment_type as {{ dbt.type_string() }}) as employment_type,
        cast(home_ownership as {{ dbt.type_string() }}) as home_ownership,
        cast(purpose as {{ dbt.type_string() }}) as purpose,
        cast(application_channel as {{ dbt.type_string() }}) as application_channel,
        cast(batch_date as date) as batch_date,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from source

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by
                application_id, applied_at, applicant_id, annual_income, loan_amount, term_months,
                debt_to_income, credit_score, delinquencies_2y, employment_type, home_ownership, purpose, application_channel
            order by batch_date, loaded_at
        ) as delivery_rank

    from renamed

),

final as (

    select
        application_id,
        applied_at,
        applicant_id,
        annual_income,
        loan_amount,
        term_months,
        debt_to_income,
        credit_score,
        delinquencies_2y,
        employment_type,
        home_ownership,
        purpose,
        application_channel,
        batch_date,
        loaded_at

    from deduplicated
    where delivery_rank = 1

)

select * from final
