"""Static reference lists of the synthetic retailer: geography, names, departments and brands.

Nothing here is random; the generator draws from these lists with its seeded generators.

Example:
    >>> from cpbi_spark.synth.reference_data import COUNTRIES, DEPARTMENTS
    >>> [c.code for c in COUNTRIES], len(DEPARTMENTS)
    (['US', 'DE', 'FR', 'GB'], 6)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Country:
    """A country the retailer sells in; ``utc_offset_minutes`` is the fixed offset printed on timestamps."""

    code: str
    currency: str
    utc_offset_minutes: int
    customer_share: float
    regions: dict[str, tuple[str, ...]]  # region -> cities
    phone_prefix: str


# Fixed offsets (no daylight saving) keep local clocks simple while still forcing the pipeline to
# normalise timestamps to UTC: every month/day boundary in the truths is a UTC boundary.
COUNTRIES: tuple[Country, ...] = (
    Country("US", "USD", -300, 0.50, {
        "Northeast": ("New York", "Boston", "Philadelphia"),
        "South": ("Atlanta", "Houston", "Miami"),
        "Midwest": ("Chicago", "Detroit", "Minneapolis"),
        "West": ("Seattle", "Denver", "San Diego"),
    }, "+1"),
    Country("DE", "EUR", 60, 0.20, {
        "Bavaria": ("München", "Nürnberg", "Augsburg"),
        "Berlin": ("Berlin",),
        "Hesse": ("Frankfurt am Main", "Wiesbaden", "Kassel"),
        "North Rhine-Westphalia": ("Köln", "Düsseldorf", "Dortmund"),
    }, "+49"),
    Country("FR", "EUR", 60, 0.12, {
        "Île-de-France": ("Paris", "Versailles", "Boulogne-Billancourt"),
        "Provence-Alpes-Côte d'Azur": ("Marseille", "Nice", "Toulon"),
        "Brittany": ("Rennes", "Brest", "Quimper"),
    }, "+33"),
    Country("GB", "GBP", 0, 0.18, {
        "England": ("London", "Manchester", "Bristol"),
        "Scotland": ("Edinburgh", "Glasgow", "Aberdeen"),
        "Wales": ("Cardiff", "Swansea", "Newport"),
    }, "+44"),
)

CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP")

FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "US": ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
           "Elizabeth", "William", "Barbara", "Richard", "Susan", "José", "Maria", "Wei", "Aisha",
           "Daniel", "Emily", "Olivia", "Noah", "Liam", "Sofia"),
    "DE": ("Lukas", "Anna", "Jonas", "Lea", "Leon", "Hannah", "Felix", "Mia", "Maximilian", "Emma",
           "Jürgen", "Sabine", "Björn", "Zoë", "Paul", "Marie", "Elias", "Sophie"),
    "FR": ("Gabriel", "Louise", "Raphaël", "Jade", "Léo", "Ambre", "Louis", "Chloé", "Hugo", "Léa",
           "Jules", "Manon", "Adèle", "Noé", "Camille", "Théo"),
    "GB": ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Mia", "Charlie", "Grace",
           "Siobhán", "Rhys", "Freya", "Alfie", "Poppy", "Arthur"),
}

LAST_NAMES: dict[str, tuple[str, ...]] = {
    "US": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
           "Martinez", "Hernández", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Nguyen", "Chen",
           "O'Brien", "Kim"),
    "DE": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
           "Hoffmann", "Koch", "Größe", "Bauer", "Richter"),
    "FR": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
           "Moreau", "Lefèvre", "Girard", "Fournier", "Mercier"),
    "GB": ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Evans",
           "Thomas", "Roberts", "O'Neill", "Walker", "Wright"),
}

STREETS: dict[str, tuple[str, ...]] = {
    "US": ("Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Park Blvd", "Elm St", "Washington Ave", "Lake Rd"),
    "DE": ("Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Lindenallee", "Bergstraße"),
    "FR": ("rue de la Paix", "avenue Victor Hugo", "rue Pasteur", "boulevard Voltaire", "rue des Écoles"),
    "GB": ("High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Mill Road"),
}

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "mail.example", "inbox.example", "post.example")


@dataclass(frozen=True)
class Category:
    """A product category; ``return_prob`` is the planted probability that a sale line is returned."""

    name: str
    noun: str
    return_prob: float


@dataclass(frozen=True)
class Department:
    """A department: its categories, a USD list-price range and the mean extra units per line."""

    name: str
    categories: tuple[Category, ...]
    price_range_usd: tuple[float, float]
    extra_units_mean: float  # quantity per line = 1 + Poisson(extra_units_mean)
    brands: tuple[str, ...]


# Return probabilities are the planted truth #4: Dresses is the clearly high one (25 %).
DEPARTMENTS: tuple[Department, ...] = (
    Department("Apparel", (
        Category("Tops", "T-Shirt", 0.14), Category("Bottoms", "Jeans", 0.16),
        Category("Dresses", "Dress", 0.25), Category("Outerwear", "Jacket", 0.12),
        Category("Footwear", "Sneaker", 0.18)),
        (12.0, 150.0), 0.10, ("Northwind", "Urbanline", "Kestrel", "Maison Lys")),
    Department("Electronics", (
        Category("Phones", "Smartphone", 0.05), Category("Audio", "Headphones", 0.08),
        Category("Computers", "Laptop", 0.06), Category("Phone Accessories", "Phone Case", 0.07),
        Category("Gaming", "Controller", 0.04)),
        (10.0, 900.0), 0.05, ("Voltix", "Sonora", "Quanta", "Pixelon")),
    Department("Home", (
        Category("Kitchen", "Pan", 0.05), Category("Bedding", "Duvet", 0.08),
        Category("Decor", "Vase", 0.06), Category("Furniture", "Chair", 0.10),
        Category("Cleaning", "Detergent", 0.02)),
        (4.0, 400.0), 0.15, ("Hearthly", "Casa Nova", "Nordhem", "Tidy&Co")),
    Department("Grocery", (
        Category("Produce", "Apples", 0.02), Category("Dairy", "Yogurt", 0.02),
        Category("Bakery", "Sourdough", 0.02), Category("Snacks", "Crisps", 0.02),
        Category("Beverages", "Sparkling Water", 0.02)),
        (0.8, 12.0), 0.80, ("Green Valley", "Farmhouse", "Daily Pick", "Bäckerei Sonne")),
    Department("Beauty", (
        Category("Skincare", "Moisturiser", 0.05), Category("Makeup", "Lipstick", 0.06),
        Category("Haircare", "Shampoo", 0.04), Category("Fragrance", "Eau de Parfum", 0.05),
        Category("Personal Care", "Toothpaste", 0.03)),
        (3.0, 90.0), 0.30, ("Lumière", "Pure Botanics", "Velvet", "Aqualis")),
    Department("Sports", (
        Category("Fitness", "Yoga Mat", 0.07), Category("Outdoor", "Backpack", 0.06),
        Category("Cycling", "Bike Helmet", 0.05), Category("Team Sports", "Football", 0.05),
        Category("Swimwear", "Swimsuit", 0.12)),
        (6.0, 300.0), 0.10, ("Apex", "TrailRunner", "Velocity", "Aquafin")),
)

PRODUCT_ADJECTIVES: tuple[str, ...] = (
    "Classic", "Essential", "Premium", "Everyday", "Pro", "Eco", "Compact", "Deluxe", "Lite", "Signature",
)

RETURN_REASONS: tuple[str, ...] = (
    "wrong_size", "damaged", "not_as_described", "changed_mind", "late_delivery",
)
