"""Precomputed embedding products (AlphaEarth, Tessera, Copernicus-Embed): readers beside the
imagery providers that fetch product vectors for a place at the product's native lattice."""

from __future__ import annotations

from .base import (
    NoImagery,
    ProductReader,
    ProductRouter,
    ProductSensor,
    ProductSpec,
    open_for,
    product_year,
    route_products,
)

__all__ = ["NoImagery", "ProductReader", "ProductRouter", "ProductSensor", "ProductSpec", "open_for",
           "product_year", "route_products"]
