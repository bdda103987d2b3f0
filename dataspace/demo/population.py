"""A synthetic but plausible population of bank/insurance customers (seeded, reproducible).

Correlations a reader would expect: deposits grow with age, young customers use the app more and visit
branches less, EV owners cluster in tier-1 cities, chronic conditions rise with age.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

CITIES = np.array(
    [
        "Beijing",
        "Shanghai",
        "Guangzhou",
        "Shenzhen",
        "Hangzhou",
        "Chengdu",
        "Wuhan",
        "Nanjing",
        "Xian",
        "Suzhou",
        "Other",
    ]
)
CITY_WEIGHTS = np.array([0.12, 0.13, 0.09, 0.09, 0.08, 0.08, 0.07, 0.06, 0.05, 0.05, 0.18])
TIER1 = np.isin(CITIES, ["Beijing", "Shanghai", "Guangzhou", "Shenzhen"])
GENDERS = np.array(["female", "male", "other", "undisclosed"])
CONDITIONS = np.array(["none", "diabetes", "hypertension", "asthma", "other"])


def generate(n: int, seed: int = 2026, id_prefix: str = "C") -> pa.Table:
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(4.0, 6.0, n) + 18, 18, 95).astype(np.int64)
    city_idx = rng.choice(len(CITIES), size=n, p=CITY_WEIGHTS)
    tier1 = TIER1[city_idx]
    youth = np.clip((70 - age) / 50, 0.05, 1.0)
    app = rng.poisson(4 + 30 * youth)
    branch = rng.poisson(0.5 + 6 * (1 - youth))
    calls = rng.poisson(0.3 + 1.5 * rng.random(n))
    ev = rng.random(n) < (0.05 + 0.18 * tier1 + 0.08 * ((age > 25) & (age < 50)))
    spend = np.round(rng.lognormal(7.6 + 0.4 * tier1, 0.8, n), 2)
    deposit = np.round(rng.lognormal(9.0 + (age - 18) / 25, 1.2, n), 2)
    has_loan = (age > 25) & (age < 60) & (rng.random(n) < 0.45)
    loan = np.where(has_loan, np.round(rng.lognormal(11.5, 1.0, n), 2), 0.0)
    cond_p = np.clip((age - 30) / 120, 0.02, 0.45)
    cond = np.where(rng.random(n) < cond_p, rng.integers(1, len(CONDITIONS), n), 0)
    gender = rng.choice(len(GENDERS), size=n, p=[0.49, 0.48, 0.01, 0.02])
    return pa.table(
        {
            "customer_id": pa.array([f"{id_prefix}{i:07d}" for i in range(1, n + 1)]),
            "age": age,
            "gender": pa.array(GENDERS[gender]),
            "city": pa.array(CITIES[city_idx]),
            "health_condition": pa.array(CONDITIONS[cond]),
            "app_sessions_30d": np.minimum(app, 10_000),
            "branch_visits_12m": np.minimum(branch, 1000),
            "service_calls_90d": np.minimum(calls, 500),
            "ev_owner": ev,
            "monthly_card_spend": np.minimum(spend, 10_000_000),
            "deposit_balance": np.minimum(deposit, 1_000_000_000),
            "loan_outstanding": np.minimum(loan, 100_000_000),
            "policy_renewal_month": rng.integers(1, 13, n),
        }
    )
