"""Plausible values to draw from: names, places, currencies, and why payments fail."""

from __future__ import annotations

from tap_stripe_dd.emulator.keys import WeightedTable

FIRST_NAMES = (
    "Jenny", "Ahmed", "Sofia", "Liam", "Mei", "Lukas", "Amara", "Diego", "Yuki", "Noah",
    "Priya", "Olga", "Kwame", "Emma", "Mateo", "Fatima", "Oliver", "Ines", "Hiro", "Chloe",
    "Ivan", "Zanele", "Lucas", "Aisha", "Ben", "Elif", "Tomás", "Sara", "Jonas", "Maya",
)  # fmt: skip
LAST_NAMES = (
    "Rosen", "Khan", "Rossi", "Murphy", "Chen", "Müller", "Okafor", "García", "Tanaka",
    "Smith", "Patel", "Ivanova", "Mensah", "Dubois", "López", "Haddad", "Brown", "Silva",
    "Sato", "Martin", "Petrov", "Dlamini", "Costa", "Bakr", "Cohen", "Yilmaz", "O'Neil",
    "Larsen", "Novak", "Nguyen",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "mail.example", "example.org", "inbox.example", "corp.example")
BUSINESSES = ("ACME TOOLS", "NORTHWIND", "GLOBEX", "INITECH", "UMBRELLA GOODS", "STARK SUPPLY")

# (city, state, country, postal code prefix, line-1 street name)
PLACES = (
    ("San Francisco", "CA", "US", "941", "Market St"),
    ("New York", "NY", "US", "100", "Broadway"),
    ("Austin", "TX", "US", "787", "Congress Ave"),
    ("Toronto", "ON", "CA", "M5V", "King St W"),
    ("London", None, "GB", "EC1A", "Old Street"),
    ("Dublin", None, "IE", "D02", "Grafton Street"),
    ("Berlin", None, "DE", "101", "Torstraße"),
    ("Paris", None, "FR", "750", "Rue de Rivoli"),
    ("Sydney", "NSW", "AU", "200", "George St"),
    ("Tokyo", None, "JP", "100", "Chiyoda"),
    ("Zürich", None, "CH", "80", "Bahnhofstrasse"),
    ("Stockholm", None, "SE", "111", "Drottninggatan"),
)  # fmt: skip

# Currency -> weight; amounts are in minor units, and JPY has none.
CURRENCIES = WeightedTable(
    {"usd": 50, "eur": 16, "gbp": 10, "cad": 6, "aud": 6, "jpy": 5, "chf": 4, "sek": 3}
)
ZERO_DECIMAL = frozenset({"jpy"})
COUNTRY_CURRENCY = {"US": "usd", "CA": "cad", "GB": "gbp", "IE": "eur", "DE": "eur", "FR": "eur",
                    "AU": "aud", "JP": "jpy", "CH": "chf", "SE": "sek"}  # fmt: skip
LOCALES = (["en"], ["en-GB"], ["fr", "en"], ["de"], ["ja"], ["es", "en"], ["sv"], [])

CHARGE_DESCRIPTIONS = (
    "Order #{n}", "Subscription renewal", "Invoice {n}", "Payment for order {n}",
    "Gift card", "Pro plan (annual)", "Starter plan (monthly)", "Top-up {n}",
)  # fmt: skip
# (failure_code, failure_message, outcome reason, outcome type, network status)
DECLINES = (
    ("card_declined", "Your card was declined.", "generic_decline", "issuer_declined",
     "declined_by_network"),
    ("card_declined", "Your card has insufficient funds.", "insufficient_funds",
     "issuer_declined", "declined_by_network"),
    ("expired_card", "Your card has expired.", "expired_card", "issuer_declined",
     "declined_by_network"),
    ("incorrect_cvc", "Your card's security code is incorrect.", "incorrect_cvc",
     "issuer_declined", "declined_by_network"),
    ("card_declined", "Your card was declined.", "highest_risk_level", "blocked",
     "not_sent_to_network"),
    ("processing_error", "An error occurred while processing your card.", "processing_error",
     "issuer_declined", "declined_by_network"),
)  # fmt: skip
PAYOUT_FAILURES = (
    ("account_closed", "The bank account has been closed."),
    ("insufficient_funds", "Your Stripe account has insufficient funds to cover the payout."),
    ("no_account", "The bank account details on file are probably incorrect."),
    ("invalid_account_number", "The account number is invalid."),
)  # fmt: skip
NETWORK_REASON_CODES = {"visa": ("10.4", "13.1", "13.3", "12.6.1"), "mastercard": ("4837", "4853",
                        "4855"), "amex": ("F29", "C08", "C31")}  # fmt: skip

PLANS = ("starter", "pro", "enterprise", "team")
CHANNELS = ("web", "ios", "android", "pos", "phone")
CAMPAIGNS = ("spring_sale", "black_friday", "referral", "newsletter")
