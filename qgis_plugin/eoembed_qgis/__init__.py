"""eoembed for QGIS: embed the selected features with the eoembed engine (a thin client of it)."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """QGIS's entry point: the plugin instance for `iface`."""
    from .plugin import EoembedPlugin

    return EoembedPlugin(iface)
