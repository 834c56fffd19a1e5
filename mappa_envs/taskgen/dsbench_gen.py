"""Generate the embedded DSBench-style splits (done on first use by :mod:`.cache`; by hand:
``python -m mappa_envs.taskgen.dsbench_gen --out DIR``).

Why generate: real DSBench data cannot ship with the repo (licences), yet tests, demos and CPU training need
tabular tasks offline. These come from data that pip packages ship (scikit-learn's bundled sets, palmerpenguins)
plus synthetic sets, and are written in the DSBench layout (description.md, train.csv, test.csv,
sample_submission.csv, answers/test_answer.csv, metric.json) so the same loader and scorer serve both.

Why a secret: this code and its data sources are public, so with a public seed agent code could rebuild a task's
answers inside the sandbox. Every random choice (synthetic data, row order, ids, the train/test split) is seeded
by :func:`seed_for`, one-way from the installation's task secret (:mod:`.secret`); the sandbox hides the secret,
the generated tasks and the packages' data folders (:mod:`.sources`). ``Spec.seed`` keeps the public v1 seeds,
only to rebuild the v1 tasks for reproducing old results.

Each task is small (<= ~1500 rows, a model fits in seconds on 2 cores), has an id column, a constant/majority
``sample_submission.csv`` whose score is the ``baseline``, and ``best`` = the answers scored against themselves,
both computed with :mod:`mappa_envs.tabular.scoring`. Output is a pure function of the code, the package versions
and the secret: fixed float rounding, ``\\n`` line ends, so regenerating reproduces every byte. The number of
rows per task does not depend on the seed, so results stay comparable across secrets. Train and eval use
disjoint data sources; both hold classification and regression tasks.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split

from mappa_envs.tabular.metrics import get_metric
from mappa_envs.tabular.scoring import score_submission
from mappa_envs.taskgen.secret import derive_seed, task_secret


@dataclass
class Built:
    """A task before it is written: the full labelled table and how to present and score it."""

    title: str
    intro: str
    data: pd.DataFrame  # features + target(s), no id column yet
    columns: dict[str, str]  # feature/target column -> description
    target_text: str
    metric: str
    task_type: str
    target_columns: list[str]
    id_column: str = "id"
    params: dict[str, Any] = field(default_factory=dict)
    stratify: str | None = None  # column to stratify the split on
    test_size: float = 0.3
    id_format: str = "{}"
    # multi-class probability tasks: train keeps this label column, answers/submission use one-hot columns
    label_column: str | None = None
    submission_text: str = ""


@dataclass(frozen=True)
class Spec:
    id: str
    split: str
    seed: int
    build: Callable[[int], Built]


# ---------------------------------------------------------------------------------------------- tasks from packages


def _iris(seed: int) -> Built:
    d = datasets.load_iris(as_frame=True).frame
    df = d.rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    df["species"] = [("setosa", "versicolor", "virginica")[t] for t in df.pop("target")]
    return Built(
        title="Iris species",
        intro="Identify the species of an iris flower from four measurements of its sepals and petals "
        "(Fisher's classic 1936 data).",
        data=df,
        columns={c: f"{c.removesuffix('_cm').replace('_', ' ')} in centimetres" for c in df.columns[:4]}
        | {"species": "the species: setosa, versicolor or virginica (target)"},
        target_text="Predict `species`, one of the strings `setosa`, `versicolor`, `virginica`.",
        metric="accuracy",
        task_type="classification",
        target_columns=["species"],
        stratify="species",
    )


def _breast_cancer(seed: int) -> Built:
    raw = datasets.load_breast_cancer(as_frame=True).frame
    df = raw.rename(columns=lambda c: c.replace(" ", "_")).round(5)
    df["malignant"] = (df.pop("target") == 0).astype(int)  # sklearn codes malignant as 0
    cols = {c: f"{c.replace('_', ' ')} of the cell nuclei in the image" for c in df.columns[:-1]}
    return Built(
        title="Breast cancer diagnosis",
        intro="Each row describes the cell nuclei in a digitised image of a fine needle aspirate of a breast mass "
        "(Wisconsin Diagnostic Breast Cancer data). Estimate how likely the mass is malignant.",
        data=df,
        columns=cols | {"malignant": "1 if the mass is malignant, 0 if benign (target)"},
        target_text="Predict `malignant`: submit the probability (or any score that ranks rows) that the mass "
        "is malignant.",
        metric="roc_auc",
        task_type="classification",
        target_columns=["malignant"],
        id_column="patient_id",
        stratify="malignant",
    )


def _diabetes(seed: int) -> Built:
    df = datasets.load_diabetes(as_frame=True, scaled=False).frame.rename(
        columns={
            "s1": "tc",
            "s2": "ldl",
            "s3": "hdl",
            "s4": "tch",
            "s5": "ltg",
            "s6": "glu",
            "target": "progression",
        }
    )
    cols = {
        "age": "age in years",
        "sex": "sex, coded 1 or 2",
        "bmi": "body mass index",
        "bp": "average blood pressure",
        "tc": "total serum cholesterol",
        "ldl": "low-density lipoproteins",
        "hdl": "high-density lipoproteins",
        "tch": "total cholesterol / HDL",
        "ltg": "log of serum triglycerides level",
        "glu": "blood sugar level",
        "progression": "a quantitative measure of disease progression one year after baseline (target)",
    }
    return Built(
        title="Diabetes progression",
        intro="Ten baseline measurements were taken for each diabetes patient. Predict how far the disease "
        "progressed one year later.",
        data=df,
        columns=cols,
        target_text="Predict `progression`, a positive number (roughly 25 to 350).",
        metric="rmse",
        task_type="regression",
        target_columns=["progression"],
    )


def _digits(seed: int) -> Built:
    d = datasets.load_digits(as_frame=True).frame
    d = d.rename(columns=lambda c: c.replace("pixel_", "px") if c != "target" else "digit")
    d = d.sample(n=1000, random_state=seed).reset_index(drop=True)
    return Built(
        title="Handwritten digit recognition",
        intro="Each row is an 8x8 image of a handwritten digit; every pixel is a grey level from 0 to 16. "
        "Recognise the digit.",
        data=d,
        columns={"px<r>_<c>": "grey level (0-16) of the pixel in row r and column c, both counted from 0"}
        | {"digit": "the digit shown, 0-9 (target)"},
        target_text="Predict `digit`, an integer from 0 to 9.",
        metric="f1_macro",
        task_type="classification",
        target_columns=["digit"],
        id_column="image_id",
        stratify="digit",
    )


def _wine(seed: int) -> Built:
    d = datasets.load_wine(as_frame=True).frame
    d = d.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
    d["cultivar"] = [f"cultivar_{t + 1}" for t in d.pop("target")]
    cols = {c: f"{c.replace('_', ' ')} of the wine (chemical analysis)" for c in d.columns[:-1]}
    cols["od280_od315"] = "OD280/OD315 ratio of the diluted wine"
    return Built(
        title="Wine cultivar",
        intro="Chemical analyses of wines grown in the same region of Italy but derived from three different "
        "cultivars. Tell which cultivar a wine comes from.",
        data=d,
        columns=cols | {"cultivar": "the cultivar: cultivar_1, cultivar_2 or cultivar_3 (target)"},
        target_text="Predict `cultivar`, one of the strings `cultivar_1`, `cultivar_2`, `cultivar_3`.",
        metric="accuracy",
        task_type="classification",
        target_columns=["cultivar"],
        stratify="cultivar",
    )


def _penguins(seed: int) -> Built:
    try:
        import palmerpenguins
    except ImportError as e:  # only needed to regenerate this one task
        raise SystemExit(
            "penguin-species needs the palmerpenguins package: pip install palmerpenguins"
        ) from e
    d = palmerpenguins.load_penguins()
    d = d[
        [
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex",
            "year",
            "species",
        ]
    ]
    return Built(
        title="Penguin species",
        intro="Measurements of adult penguins observed on three islands of the Palmer Archipelago, Antarctica "
        "(Palmer Station LTER). Identify the species. Some measurements are missing.",
        data=d.reset_index(drop=True),
        columns={
            "island": "island where the penguin was observed (Biscoe, Dream, Torgersen)",
            "bill_length_mm": "bill length in millimetres (may be missing)",
            "bill_depth_mm": "bill depth in millimetres (may be missing)",
            "flipper_length_mm": "flipper length in millimetres (may be missing)",
            "body_mass_g": "body mass in grams (may be missing)",
            "sex": "male or female (may be missing)",
            "year": "year of observation",
            "species": "Adelie, Chinstrap or Gentoo (target)",
        },
        target_text="Predict `species`, one of the strings `Adelie`, `Chinstrap`, `Gentoo`.",
        metric="f1_macro",
        task_type="classification",
        target_columns=["species"],
        stratify="species",
    )


# ---------------------------------------------------------------------------------------------- synthetic tasks


def _loan_default(seed: int) -> Built:
    x, y = datasets.make_classification(
        n_samples=1000,
        n_features=6,
        n_informative=4,
        n_redundant=1,
        weights=[0.8],
        flip_y=0.02,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": np.clip(40 + 10 * x[:, 0], 18, 80).round().astype(int),
            "annual_income": np.clip(55000 + 18000 * x[:, 1], 8000, None).round(-2),
            "loan_amount": np.clip(12000 + 6000 * x[:, 2], 500, None).round(-1),
            "credit_score": np.clip(680 - 60 * x[:, 3], 300, 850).round().astype(int),
            "years_employed": np.clip(6 + 4 * x[:, 4], 0, None).round(1),
            "employment": np.where(
                x[:, 5] > 0.8, "self_employed", np.where(x[:, 5] < -1.0, "unemployed", "salaried")
            ),
        }
    )
    df.loc[rng.random(len(df)) < 0.05, "years_employed"] = np.nan
    df["default"] = np.where(y == 1, "yes", "no")
    return Built(
        title="Loan default",
        intro="A lender wants to flag loan applicants who will default. Each row is one past applicant.",
        data=df,
        columns={
            "age": "applicant age in years",
            "annual_income": "declared yearly income in dollars",
            "loan_amount": "requested amount in dollars",
            "credit_score": "credit bureau score (300-850)",
            "years_employed": "years in current employment (missing for about 5% of applicants)",
            "employment": "salaried, self_employed or unemployed",
            "default": "yes if the applicant defaulted, no otherwise (target)",
        },
        target_text="Predict `default`, the string `yes` or `no`. Defaults are the minority class.",
        metric="f1",
        params={"pos_label": "yes"},
        task_type="classification",
        target_columns=["default"],
        id_column="customer_id",
        id_format="C{:05d}",
        stratify="default",
    )


def _wine_quality(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 1000
    df = pd.DataFrame(
        {
            "fixed_acidity": rng.normal(8.3, 1.6, n).round(2),
            "volatile_acidity": np.abs(rng.normal(0.52, 0.18, n)).round(3),
            "residual_sugar": np.abs(rng.gamma(2.0, 1.3, n)).round(2),
            "chlorides": np.abs(rng.normal(0.087, 0.03, n)).round(4),
            "sulphates": np.abs(rng.normal(0.65, 0.15, n)).round(3),
            "alcohol": rng.normal(10.4, 1.0, n).round(2),
            "ph": rng.normal(3.3, 0.15, n).round(2),
        }
    )
    latent = (
        0.9 * (df.alcohol - 10.4)
        - 4.0 * (df.volatile_acidity - 0.52)
        + 2.0 * (df.sulphates - 0.65)
        - 5.0 * (df.chlorides - 0.087)
        + rng.normal(0, 0.55, n)
    )
    df["quality"] = np.clip(np.round(5.6 + latent), 3, 8).astype(int)
    return Built(
        title="Wine quality",
        intro="Tasters rated red wines on a 0-10 scale; in this data the ratings run from 3 to 8. Predict the "
        "rating from lab measurements. Ratings are ordered, so being off by one is much better than by three.",
        data=df,
        columns={
            "fixed_acidity": "tartaric acid, g/dm3",
            "volatile_acidity": "acetic acid, g/dm3",
            "residual_sugar": "sugar left after fermentation, g/dm3",
            "chlorides": "sodium chloride, g/dm3",
            "sulphates": "potassium sulphate, g/dm3",
            "alcohol": "alcohol, % by volume",
            "ph": "pH",
            "quality": "the tasters' rating, an integer from 3 to 8 (target)",
        },
        target_text="Predict `quality`, an integer from 3 to 8.",
        metric="qwk",
        task_type="classification",
        target_columns=["quality"],
        stratify="quality",
    )


def _match_outcome(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 1200
    home_elo = rng.normal(1500, 120, n).round()
    away_elo = rng.normal(1500, 120, n).round()
    home_form = rng.integers(0, 16, n)
    away_form = rng.integers(0, 16, n)
    rest = rng.integers(2, 8, n)
    diff = (home_elo - away_elo) / 100 + 0.08 * (home_form - away_form) + 0.25
    logits = np.column_stack([0.9 * diff, np.full(n, 0.1 - 0.25 * np.abs(diff)), -0.9 * diff])
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    outcome = np.array([rng.choice(3, p=p) for p in prob])
    df = pd.DataFrame(
        {
            "home_elo": home_elo.astype(int),
            "away_elo": away_elo.astype(int),
            "home_form": home_form,
            "away_form": away_form,
            "home_rest_days": rest,
            "result": np.array(["home_win", "draw", "away_win"])[outcome],
        }
    )
    return Built(
        title="Football match outcome",
        intro="Forecast the result of league football matches. A forecast is a probability for each of the three "
        "outcomes, so a confident wrong forecast costs a lot.",
        data=df,
        columns={
            "home_elo": "Elo rating of the home team before the match",
            "away_elo": "Elo rating of the away team before the match",
            "home_form": "points the home team won in its last five matches (0-15)",
            "away_form": "points the away team won in its last five matches (0-15)",
            "home_rest_days": "days since the home team's previous match",
            "result": "home_win, draw or away_win (target; train.csv only)",
        },
        target_text="train.csv has the outcome in `result`. For each test match, submit three probabilities in the "
        "columns `home_win`, `draw`, `away_win` (each in [0, 1]; rows are renormalised to sum to 1).",
        metric="log_loss",
        task_type="classification",
        target_columns=["home_win", "draw", "away_win"],
        label_column="result",
        stratify="result",
    )


def _house_prices(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 1200
    hoods = np.array(["riverside", "old_town", "hillcrest", "industrial", "suburbs"])
    hood_effect = {"riverside": 0.25, "old_town": 0.15, "hillcrest": 0.35, "industrial": -0.3, "suburbs": 0.0}
    hood = hoods[rng.integers(0, len(hoods), n)]
    area = rng.gamma(9, 15, n).round()
    bedrooms = np.clip(np.round(area / 45 + rng.normal(0, 0.8, n)), 1, 7).astype(int)
    age = rng.integers(0, 100, n)
    garage = rng.random(n) < 0.55
    log_price = (
        11.2
        + 0.0065 * area
        + 0.04 * bedrooms
        - 0.004 * age
        + 0.12 * garage
        + np.array([hood_effect[h] for h in hood])
        + rng.normal(0, 0.18, n)
    )
    df = pd.DataFrame(
        {
            "living_area_m2": area.astype(int),
            "bedrooms": bedrooms,
            "age_years": age,
            "has_garage": np.where(garage, "yes", "no"),
            "neighbourhood": hood,
            "price": np.exp(log_price).round(-2),
        }
    )
    return Built(
        title="House prices",
        intro="Estimate the sale price of houses in a mid-sized town from a few facts about each house. Prices are "
        "skewed: a few houses cost many times the median.",
        data=df,
        columns={
            "living_area_m2": "living area in square metres",
            "bedrooms": "number of bedrooms",
            "age_years": "years since construction",
            "has_garage": "yes or no",
            "neighbourhood": "one of riverside, old_town, hillcrest, industrial, suburbs",
            "price": "sale price in dollars (target)",
        },
        target_text="Predict `price`, a positive number of dollars.",
        metric="rmsle",
        task_type="regression",
        target_columns=["price"],
        id_column="house_id",
    )


def _sensor_calibration(seed: int) -> Built:
    x, y = datasets.make_regression(
        n_samples=800, n_features=6, n_informative=5, n_targets=3, noise=8.0, random_state=seed
    )
    df = pd.DataFrame(x.round(4), columns=[f"raw_{i}" for i in range(1, 7)])
    df["temperature_c"] = (21 + y[:, 0] / 20).round(3)
    df["humidity_pct"] = (50 + y[:, 1] / 8).round(3)
    df["pressure_hpa"] = (1013 + y[:, 2] / 10).round(3)
    return Built(
        title="Sensor calibration",
        intro="A cheap environmental sensor reports six raw, uncalibrated channels. A reference station measured "
        "the true temperature, humidity and pressure at the same moments. Learn the calibration: predict all "
        "three reference values from the raw channels.",
        data=df,
        columns={f"raw_{i}": f"raw reading of channel {i} (standardised units)" for i in range(1, 7)}
        | {
            "temperature_c": "reference temperature in degrees Celsius (target)",
            "humidity_pct": "reference relative humidity in percent (target)",
            "pressure_hpa": "reference air pressure in hPa (target)",
        },
        target_text="Predict the three columns `temperature_c`, `humidity_pct` and `pressure_hpa`.",
        metric="mcrmse",
        task_type="regression",
        target_columns=["temperature_c", "humidity_pct", "pressure_hpa"],
        id_column="reading_id",
    )


def _energy_demand(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 1500
    hour = rng.integers(0, 24, n)
    dow = rng.integers(0, 7, n)
    temp = rng.normal(14, 9, n).round(1)
    holiday = rng.random(n) < 0.04
    daily = 1 + 0.35 * np.sin((hour - 7) / 24 * 2 * np.pi) + 0.2 * ((hour >= 17) & (hour <= 21))
    demand = (
        820 * daily * np.where(dow >= 5, 0.85, 1.0) * np.where(holiday, 0.8, 1.0)
        + 9 * np.abs(temp - 17)
        + rng.normal(0, 45, n)
    )
    df = pd.DataFrame(
        {
            "hour": hour,
            "day_of_week": np.array(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])[dow],
            "temperature_c": temp,
            "is_holiday": holiday.astype(int),
            "demand_mwh": np.clip(demand, 50, None).round(1),
        }
    )
    return Built(
        title="Electricity demand",
        intro="A grid operator forecasts hourly electricity demand for a region from the calendar and the weather.",
        data=df,
        columns={
            "hour": "hour of the day, 0-23",
            "day_of_week": "mon ... sun",
            "temperature_c": "outdoor temperature in degrees Celsius",
            "is_holiday": "1 on public holidays, else 0",
            "demand_mwh": "electricity demand during that hour in MWh (target)",
        },
        target_text="Predict `demand_mwh`, a positive number.",
        metric="smape",
        task_type="regression",
        target_columns=["demand_mwh"],
    )


def _product_category(seed: int) -> Built:
    names = ["electronics", "books", "toys", "garden", "kitchen", "sports", "beauty", "clothing"]
    x, y = datasets.make_classification(
        n_samples=1200,
        n_features=10,
        n_informative=6,
        n_redundant=2,
        n_classes=8,
        n_clusters_per_class=1,
        class_sep=1.2,
        flip_y=0.05,
        random_state=seed,
    )
    df = pd.DataFrame(x.round(4), columns=[f"f{i:02d}" for i in range(10)])
    df["category"] = np.array(names)[y]
    return Built(
        title="Product category",
        intro="An online shop embeds each product listing into ten anonymous numeric features. Suggest the "
        "product's category; the shop shows up to three suggestions, best first.",
        data=df,
        columns={f"f{i:02d}": "anonymous listing feature" for i in range(10)}
        | {"category": f"one of {', '.join(names)} (target)"},
        target_text="Predict `category`: up to three category names separated by single spaces, the most likely "
        "first (e.g. `books toys garden`).",
        metric="map@3",
        task_type="classification",
        target_columns=["category"],
        id_column="listing_id",
        stratify="category",
    )


def _churn(seed: int) -> Built:
    x, y = datasets.make_classification(
        n_samples=900,
        n_features=5,
        n_informative=3,
        n_redundant=1,
        weights=[0.7],
        flip_y=0.02,
        class_sep=1.6,
        random_state=seed,
    )
    df = pd.DataFrame(
        {
            "tenure_months": np.clip(24 + 14 * x[:, 0], 1, 72).round().astype(int),
            "monthly_charges": np.clip(65 + 20 * x[:, 1], 18, 120).round(2),
            "support_calls": np.clip(np.round(2 + 1.5 * x[:, 2]), 0, 12).astype(int),
            "contract": np.where(
                x[:, 3] > 0.3, "month_to_month", np.where(x[:, 3] > -0.9, "one_year", "two_year")
            ),
            "data_usage_gb": np.clip(12 + 6 * x[:, 4], 0, None).round(2),
            "churned": y,
        }
    )
    return Built(
        title="Customer churn",
        intro="A telecom operator wants calibrated churn probabilities for its customers, to plan retention "
        "offers. Each row is one customer at the start of a quarter.",
        data=df,
        columns={
            "tenure_months": "months as a customer",
            "monthly_charges": "current monthly bill in dollars",
            "support_calls": "support calls in the last quarter",
            "contract": "month_to_month, one_year or two_year",
            "data_usage_gb": "mobile data used last month, GB",
            "churned": "1 if the customer left during the quarter, else 0 (target)",
        },
        target_text="Predict `churned` as a probability in [0, 1] that the customer leaves.",
        metric="log_loss",
        task_type="classification",
        target_columns=["churned"],
        stratify="churned",
    )


def _delivery_time(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 1000
    dist = rng.gamma(2.2, 1.8, n).round(2)
    items = rng.integers(1, 9, n)
    hour = rng.integers(10, 23, n)
    weather = np.array(["clear", "rain", "snow"])[rng.choice(3, n, p=[0.7, 0.24, 0.06])]
    experience = rng.integers(0, 60, n)
    rush = ((hour >= 12) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    minutes = (
        12
        + 3.2 * dist
        + 0.9 * items
        + 6 * rush
        + np.select([weather == "rain", weather == "snow"], [5, 14], 0)
        - 0.08 * experience
        + rng.gumbel(0, 4, n)
    )
    df = pd.DataFrame(
        {
            "distance_km": dist,
            "items": items,
            "order_hour": hour,
            "weather": weather,
            "courier_experience_months": experience,
            "delivery_minutes": np.clip(minutes, 5, None).round(1),
        }
    )
    return Built(
        title="Food delivery time",
        intro="A food delivery platform wants to tell customers how long their order will take. Each row is a "
        "delivered order.",
        data=df,
        columns={
            "distance_km": "road distance from restaurant to customer",
            "items": "number of items in the order",
            "order_hour": "hour the order was placed (10-22)",
            "weather": "clear, rain or snow",
            "courier_experience_months": "months the courier has worked for the platform",
            "delivery_minutes": "minutes from order to delivery (target)",
        },
        target_text="Predict `delivery_minutes`.",
        metric="mae",
        task_type="regression",
        target_columns=["delivery_minutes"],
        id_column="order_id",
        id_format="ORD-{:04d}",
    )


def _crop_yield(seed: int) -> Built:
    rng = np.random.default_rng(seed)
    n = 900
    rain = rng.gamma(6, 80, n).round()
    temp = rng.normal(19, 3, n).round(1)
    nitrogen = rng.uniform(0, 200, n).round(1)
    soil = np.array(["clay", "loam", "sand"])[rng.integers(0, 3, n)]
    irrigated = rng.random(n) < 0.35
    water = np.where(irrigated, np.maximum(rain, 450), rain)
    yield_t = (
        2.0
        + 4.5 * (1 - np.exp(-water / 350))
        + 1.6 * (1 - np.exp(-nitrogen / 70))
        - 0.06 * (temp - 19) ** 2
        + np.select([soil == "loam", soil == "sand"], [0.6, -0.5], 0)
        + rng.normal(0, 0.45, n)
    )
    df = pd.DataFrame(
        {
            "rainfall_mm": rain.astype(int),
            "mean_temp_c": temp,
            "nitrogen_kg_ha": nitrogen,
            "soil": soil,
            "irrigated": irrigated.astype(int),
            "yield_t_ha": np.clip(yield_t, 0.2, None).round(3),
        }
    )
    return Built(
        title="Wheat yield",
        intro="Agronomists recorded growing conditions and the wheat harvest of many fields. Predict a field's "
        "yield.",
        data=df,
        columns={
            "rainfall_mm": "rainfall over the growing season in mm",
            "mean_temp_c": "mean temperature over the growing season in degrees Celsius",
            "nitrogen_kg_ha": "nitrogen fertiliser applied, kg per hectare",
            "soil": "clay, loam or sand",
            "irrigated": "1 if the field was irrigated, else 0",
            "yield_t_ha": "harvest in tonnes per hectare (target)",
        },
        target_text="Predict `yield_t_ha`.",
        metric="r2",
        task_type="regression",
        target_columns=["yield_t_ha"],
        id_column="field_id",
    )


SPECS: tuple[Spec, ...] = (
    Spec("iris-species", "train", 11, _iris),
    Spec("breast-cancer-diagnosis", "train", 12, _breast_cancer),
    Spec("digits-recognition", "train", 13, _digits),
    Spec("loan-default", "train", 14, _loan_default),
    Spec("wine-quality", "train", 15, _wine_quality),
    Spec("match-outcome", "train", 16, _match_outcome),
    Spec("diabetes-progression", "train", 17, _diabetes),
    Spec("house-prices", "train", 18, _house_prices),
    Spec("sensor-calibration", "train", 19, _sensor_calibration),
    Spec("energy-demand", "train", 20, _energy_demand),
    Spec("wine-cultivar", "eval", 31, _wine),
    Spec("penguin-species", "eval", 32, _penguins),
    Spec("product-category", "eval", 33, _product_category),
    Spec("customer-churn", "eval", 34, _churn),
    Spec("delivery-time", "eval", 35, _delivery_time),
    Spec("crop-yield", "eval", 36, _crop_yield),
)


# ---------------------------------------------------------------------------------------------- writing


def _baseline(b: Built, train: pd.DataFrame, n: int) -> pd.DataFrame:
    """The constant prediction a sample submission holds: majority class, class priors, mean or median."""
    metric = get_metric(b.metric)
    out: dict[str, Any] = {}
    if b.label_column is not None:  # class-probability columns: the train priors
        freq = train[b.label_column].value_counts(normalize=True)
        for c in b.target_columns:
            out[c] = round(float(freq.get(c, 0.0)), 4)
    else:
        for c in b.target_columns:
            col = train[c]
            if metric.prediction in ("label", "ranking"):
                counts = col.value_counts()
                order = sorted(counts.index, key=lambda v: (-counts[v], str(v)))
                k = int(metric.fixed.get("k", b.params.get("k", 1))) if metric.prediction == "ranking" else 1
                out[c] = " ".join(str(v) for v in order[:k])
            elif metric.prediction in ("score", "probability"):
                out[c] = round(float((col == 1).mean()), 4)
            elif b.metric in ("mae", "medae", "smape"):
                out[c] = round(float(col.median()), 3)
            else:
                out[c] = round(float(col.mean()), 3)
    return pd.DataFrame({k: [v] * n for k, v in out.items()})


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n")


def seed_for(spec: Spec, secret: bytes | None) -> int:
    """The task's seed: derived from ``secret``, or the public ``spec.seed`` (the v1 tasks) when it is None."""
    return spec.seed if secret is None else derive_seed(secret, spec.id)


def build_task(spec: Spec, seed: int | None = None) -> dict[str, Any]:
    """Build one task's tables and texts (no files): train, test, answers, sample, metric meta, description.

    ``seed`` (default the public ``spec.seed``) drives everything random: synthetic data, row order, ids and the
    train/test split, so without it the answers cannot be rebuilt from this code."""
    seed = spec.seed if seed is None else seed
    b = spec.build(seed)
    df = b.data.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    ids = [b.id_format.format(i) for i in np.random.default_rng(seed).permutation(len(df)) + 1]
    df.insert(0, b.id_column, ids)
    strat = df[b.stratify] if b.stratify else None
    train, test = train_test_split(df, test_size=b.test_size, random_state=seed, stratify=strat)
    train = train.sort_values(b.id_column, key=_id_key).reset_index(drop=True)
    test = test.sort_values(b.id_column, key=_id_key).reset_index(drop=True)
    if b.label_column is not None:
        answers = pd.DataFrame({b.id_column: test[b.id_column]})
        for c in b.target_columns:
            answers[c] = (test[b.label_column] == c).astype(int)
        hidden = [b.label_column]
    else:
        answers = test[[b.id_column, *b.target_columns]].copy()
        hidden = list(b.target_columns)
    sample = pd.concat([test[[b.id_column]], _baseline(b, train, len(test))], axis=1)
    return {
        "built": b,
        "train": train,
        "test": test.drop(columns=hidden),
        "answers": answers,
        "sample": sample,
    }


def _id_key(s: pd.Series) -> pd.Series:
    digits = s.astype(str).str.extract(r"(\d+)$")[0]
    return digits.astype(int) if digits.notna().all() else s


def write_task(spec: Spec, out: Path, secret: bytes | None = None) -> dict[str, Any]:
    """Write one task folder under ``out/<split>/<id>`` (seeded by :func:`seed_for`) and return its summary."""
    t = build_task(spec, seed_for(spec, secret))
    b: Built = t["built"]
    task_dir = out / spec.split / spec.id
    if task_dir.exists():
        shutil.rmtree(task_dir)
    _write_csv(t["train"], task_dir / "train.csv")
    _write_csv(t["test"], task_dir / "test.csv")
    _write_csv(t["sample"], task_dir / "sample_submission.csv")
    _write_csv(t["answers"], task_dir / "answers" / "test_answer.csv")
    metric = get_metric(b.metric)
    meta: dict[str, Any] = {
        "metric": b.metric,
        "id_column": b.id_column,
        "target_columns": list(b.target_columns),
        "higher_is_better": metric.higher_is_better,
        "baseline": 0.0,
        "best": 0.0,
        "task_type": b.task_type,
    }
    if b.params:
        meta["params"] = dict(b.params)
    answers_csv = task_dir / "answers" / "test_answer.csv"
    scored = {}
    for key, sub in (("baseline", task_dir / "sample_submission.csv"), ("best", answers_csv)):
        o = score_submission({**meta, "task_dir": task_dir}, answers_csv, sub)
        if not o["valid"]:
            raise RuntimeError(f"{spec.id}: the {key} submission does not score: {o['reason']}")
        scored[key] = float(o["score"])
    meta.update(scored)
    seeded = (
        f"seed {spec.seed}" if secret is None else "seed derived from the task secret"
    )  # v1 text kept as is
    meta["source"] = f"generated by mappa_envs.taskgen.dsbench_gen ({seeded}); regenerate, do not edit"
    (task_dir / "metric.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8", newline="\n")
    (task_dir / "description.md").write_text(
        _description(b, t["train"], t["test"], t["sample"]), encoding="utf-8", newline="\n"
    )
    return {
        "id": spec.id,
        "split": spec.split,
        "task_type": b.task_type,
        "metric": b.metric,
        "rows_train": len(t["train"]),
        "rows_test": len(t["test"]),
        "baseline": meta["baseline"],
        "best": meta["best"],
    }


# ---------------------------------------------------------------------------------------------- description.md

_METRIC_TEXT = {
    "accuracy": "accuracy: the fraction of test rows whose predicted label is exactly right. Higher is better.",
    "f1": "F1 score of the positive class `{pos_label}` (the harmonic mean of its precision and recall). "
    "Higher is better.",
    "f1_macro": "macro-averaged F1: the F1 score of each class, averaged with equal weight per class. Higher "
    "is better.",
    "qwk": "quadratic weighted kappa between predicted and true ratings: 1 is perfect agreement, 0 is chance, "
    "and a prediction far from the truth is penalised with the square of the distance. Higher is better.",
    "roc_auc": "area under the ROC curve of your scores: only the ranking of the rows matters, 0.5 is random "
    "and 1 is perfect. Higher is better.",
    "log_loss": "log loss (cross-entropy) of your probabilities; they are clipped to [1e-15, 1 - 1e-15]{renorm}. "
    "Lower is better.",
    "rmse": "root mean squared error. Lower is better.",
    "mae": "mean absolute error. Lower is better.",
    "r2": "R² (coefficient of determination): 1 is perfect, 0 is as good as predicting the mean. Higher is "
    "better.",
    "rmsle": "root mean squared logarithmic error, sqrt(mean((log(1 + prediction) - log(1 + truth))²)): "
    "relative errors count, not absolute ones. Lower is better.",
    "smape": "symmetric mean absolute percentage error, 100 · mean(2·|prediction − truth| / (|truth| + "
    "|prediction|)), from 0 (perfect) to 200. Lower is better.",
    "mcrmse": "mean column-wise root mean squared error: the RMSE of each target column, averaged over the "
    "columns. Lower is better.",
    "map@3": "mean average precision at 3: a row scores 1 if the true category is your first suggestion, 1/2 if "
    "second, 1/3 if third, else 0; the score is the mean over rows. Higher is better.",
}


def _description(b: Built, train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame) -> str:
    header = ",".join(sample.columns)
    metric_text = _METRIC_TEXT[b.metric].format(
        pos_label=b.params.get("pos_label", ""),
        renorm=" and each row is rescaled to sum to 1" if len(b.target_columns) > 1 else "",
    )
    cols = "\n".join(f"- `{c}`: {d}" for c, d in b.columns.items())
    example = sample.head(3).to_csv(index=False, lineterminator="\n").strip()
    return f"""# {b.title}

{b.intro}

## Files
- `train.csv`: {len(train)} rows with the features and the target.
- `test.csv`: {len(test)} rows with the same features but no target. Predict these.
- `sample_submission.csv`: a valid submission in the required format (a constant baseline prediction).

## Columns
- `{b.id_column}`: unique row identifier. Use it to match your predictions to the test rows.
{cols}

## Target
{b.target_text}

## Evaluation
Submissions are scored with {metric_text}

## Submission format
Write `submission.csv` with one row for each row of `test.csv` (matched by `{b.id_column}`, any order) and exactly
this header:

```
{header}
```

For example:

```
{example}
```

A missing or duplicate id, an empty or NaN cell, or a malformed value makes the whole submission invalid.
"""


# ---------------------------------------------------------------------------------------------- CLI


def generate(
    out: Path, only: Iterable[str] | None = None, clean: bool = False, *, secret: bytes | None
) -> list[dict[str, Any]]:
    """Write the selected tasks (default all) under ``out``; ``clean`` first removes the split folders.

    ``secret`` seeds every task (:func:`seed_for`); ``None`` rebuilds the v1 tasks from their public seeds, which
    anyone can recompute: use that only to reproduce old results, never to train or evaluate."""
    wanted = set(only) if only else None
    specs = [s for s in SPECS if wanted is None or s.id in wanted]
    if wanted is not None and (unknown := wanted - {s.id for s in SPECS}):
        raise SystemExit(f"unknown task id(s) {sorted(unknown)}; known: {[s.id for s in SPECS]}")
    if clean:
        for split in sorted({s.split for s in specs}):
            shutil.rmtree(out / split, ignore_errors=True)
    return [write_task(s, out, secret) for s in specs]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (keep it outside every workspace)")
    ap.add_argument(
        "--public-seeds",
        action="store_true",
        help="rebuild the v1 tasks from their public seeds (recomputable by anyone: for reproducing old results)",
    )
    ap.add_argument("--only", default="", help="comma-separated task ids to (re)generate; default all")
    ap.add_argument("--clean", action="store_true", help="remove the split folders first (drops stale tasks)")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s.strip()] or None
    rows = generate(args.out, only, args.clean, secret=None if args.public_seeds else task_secret())
    for r in rows:
        print(
            f"{r['split']:5} {r['id']:24} {r['task_type']:14} {r['metric']:9} "
            f"train={r['rows_train']:4} test={r['rows_test']:4} baseline={r['baseline']:.4g} best={r['best']:.4g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
