"""The eoembed Processing provider: every algorithm through processing.run on real imagery.

Embedding runs go through the plugin's runner (the engine in its worker process) with the
training-free "rcf" model; answers are checked against the engine called in its own Python
(:func:`conftest.engine_run`) and against similarity / clusters recomputed here with numpy.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_run, read_raster, write_tif

pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "qgis_plugin"))
TILE = REPO / ".." / "shared" / "data" / "s2_l2a_tiles" / "637U_59R_1_3.tif"
CELL = 40.0  # rcf: one embedding cell per 4 × 4 pixels of 10 m


@pytest.fixture(scope="module")
def tile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real agriculture tile, or a tiny synthetic 12-band S2 stack when shared/ is absent."""
    if TILE.exists():
        return TILE.resolve()
    path = tmp_path_factory.mktemp("img") / "synthetic_s2.tif"
    yy, xx = np.mgrid[0:224, 0:224]
    bands = [(1500 + 800 * np.sin(xx / (9 + b)) * np.cos(yy / (13 + b)) + 40 * b).astype(np.int16) for b in range(12)]
    return write_tif(path, np.stack(bands), "EPSG:32632", (549900.0, 10.0, 0.0, 6344080.0, 0.0, -10.0))


@pytest.fixture(scope="module")
def tile_bounds(tile: Path) -> tuple[float, float, float, float]:
    values, gt, crs = read_raster(tile)
    assert crs == "EPSG:32632"
    h, w = values.shape[1:]
    return (gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3])


@pytest.fixture(scope="module")
def processing(qgis_app: QgsApplication, qgis_processing: None):
    """The processing module with the eoembed provider registered."""
    import processing as qgis_processing_module
    from eoembed_qgis.processing import EoembedProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("eoembed") is not None:  # the plugin, loaded by another test
        yield qgis_processing_module
        return
    provider = EoembedProvider()  # QGIS holds a pointer only: keep the Python object alive
    assert registry.addProvider(provider)
    yield qgis_processing_module
    registry.removeProvider(provider)


def area_extent(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A 1.2 km square inside the tile, not on the 40 m lattice (so snapping shows)."""
    x0, y0 = bounds[0] + 413.0, bounds[1] + 417.0
    return (x0, y0, x0 + 1200.0, y0 + 1200.0)


@pytest.fixture(scope="module")
def area_grid(processing, tile: Path, tile_bounds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    x0, y0, x1, y1 = area_extent(tile_bounds)
    out = tmp_path_factory.mktemp("area") / "grid.tif"
    res = processing.run("eoembed:embedarea", {
        "EXTENT": f"{x0},{x1},{y0},{y1} [EPSG:32632]", "MODEL": "rcf",
        "IMAGERY": [str(tile)], "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out)
    return out


class Transform:
    """A north-up GDAL geotransform as ``transform * (col, row) -> (x, y)``."""

    def __init__(self, gt: tuple[float, ...]) -> None:
        self.gt = tuple(gt)
        self.c, self.a, _, self.f, _, self.e = gt

    def __mul__(self, cr: tuple[float, float]) -> tuple[float, float]:
        return self.c + cr[0] * self.a, self.f + cr[1] * self.e

    def __iter__(self):
        return iter(self.gt)


def read(path: Path) -> tuple[np.ndarray, Transform, str]:
    values, gt, crs = read_raster(path)
    return values, Transform(gt), crs


# -- provider ---------------------------------------------------------------------------------
def test_provider_registers_four_documented_algorithms(processing) -> None:
    provider = QgsApplication.processingRegistry().providerById("eoembed")
    assert provider is not None and provider.name() == "eoembed"
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == ["eoembed:clusterembeddings", "eoembed:embedarea", "eoembed:embedfeatures", "eoembed:pcaview",
                   "eoembed:similaritymap"]
    for alg in provider.algorithms():
        assert len(alg.shortHelpString()) > 80, alg.id()
        assert not alg.icon().isNull(), alg.id()
    # reproducible parameters: the model is a string id, dates are dates, imagery is required
    from qgis.core import QgsProcessingParameterDefinition

    alg = provider.algorithm("embedfeatures")
    assert alg.parameterDefinition("MODEL").type() == "string"
    assert alg.parameterDefinition("MODEL").defaultValue() == "rcf"
    assert alg.parameterDefinition("START").type() == "datetime"
    assert not alg.parameterDefinition("IMAGERY").flags() & QgsProcessingParameterDefinition.FlagOptional
    assert alg.parameterDefinition("DEVICE").options()[0] == "cpu"
    from eoembed_qgis.processing.engine_job import model_ids

    assert "rcf" in model_ids()


# -- embed features ---------------------------------------------------------------------------
def _points_layer(bounds, name: str = "pts") -> QgsVectorLayer:
    layer = QgsVectorLayer("Point?crs=EPSG:32632&field=name:string", name, "memory")
    feats = []
    for i, (dx, dy) in enumerate([(500, 500), (1100, 700), (1700, 1500)]):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(bounds[0] + dx, bounds[1] + dy)))
        f.setAttributes([f"p{i}"])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_embed_features_embeds_only_the_selection_and_matches_the_engine(
        processing, tile: Path, tile_bounds, tmp_path: Path) -> None:
    layer = _points_layer(tile_bounds)
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] in ("p0", "p2")])
    out = tmp_path / "embedded.gpkg"
    processing.run("eoembed:embedfeatures", {
        "INPUT": QgsProcessingFeatureSourceDefinition(layer.id(), True), "MODEL": "rcf",
        "BUFFER": 160.0, "YEAR": None, "IMAGERY": [str(tile)], "OUTPUT": str(out)})
    result = QgsVectorLayer(str(out), "embedded", "ogr")
    assert result.isValid() and result.crs().authid() == "EPSG:32632"
    feats = sorted(result.getFeatures(), key=lambda f: f["name"])
    assert [f["name"] for f in feats] == ["p0", "p2"]
    names = result.fields().names()
    assert "eoembed_id" in names and "e0" in names and "e511" in names and "e512" not in names
    # geometry is the input point, vector is what the engine gives for the same square
    src = {f["name"]: f for f in layer.getFeatures()}
    for f in feats:
        p_in, p_out = src[f["name"]].geometry().asPoint(), f.geometry().asPoint()
        assert (p_out.x(), p_out.y()) == pytest.approx((p_in.x(), p_in.y()))
        assert f["eoembed_id"] == str(src[f["name"]].id())
    p0 = src["p0"].geometry().asPoint()
    ref = engine_run("""
        import eoembed
        e = eoembed.get_embedding("rcf", eoembed.PointBuffer(ARGS["x"], ARGS["y"], 160.0, crs="EPSG:32632"),
                                  source=ARGS["tile"])
        print(json.dumps(e.to_numpy().tolist()))
    """, x=p0.x(), y=p0.y(), tile=str(tile))
    got = np.array([feats[0][f"e{i}"] for i in range(512)])
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-5, atol=1e-6)


def test_embed_features_cancel_stops_the_worker(processing, tile: Path, tile_bounds, tmp_path: Path) -> None:
    layer = _points_layer(tile_bounds, "cancel")
    feedback = QgsProcessingFeedback()
    progress: list[float] = []
    feedback.progressChanged.connect(lambda p: (progress.append(p), feedback.cancel()))
    out = tmp_path / "never.gpkg"
    with pytest.raises(QgsProcessingException, match="cancel"):
        processing.run("eoembed:embedfeatures", {
            "INPUT": layer, "MODEL": "rcf", "IMAGERY": [str(tile)], "OUTPUT": str(out)}, feedback=feedback)
    assert progress, "the worker reported progress before it was cancelled"
    assert not out.exists()


def test_embed_features_rejects_year_and_dates_together(processing, tile: Path, tile_bounds) -> None:
    layer = _points_layer(tile_bounds, "bad")
    with pytest.raises(QgsProcessingException, match="either a year or start/end"):
        processing.run("eoembed:embedfeatures", {
            "INPUT": layer, "MODEL": "rcf", "YEAR": 2020, "START": "2020-01-01", "END": "2020-06-01",
            "IMAGERY": [str(tile)], "OUTPUT": "TEMPORARY_OUTPUT"})


# -- embed area -------------------------------------------------------------------------------
def test_embed_area_writes_a_snapped_georeferenced_grid(area_grid: Path, tile: Path, tile_bounds,
                                                        tmp_path: Path) -> None:
    values, transform, crs = read(area_grid)
    x0, y0, x1, y1 = area_extent(tile_bounds)
    assert crs == "EPSG:32632" and values.shape[0] == 512
    assert transform.a == CELL and transform.e == -CELL
    h, w = values.shape[1:]
    left, top = transform.c, transform.f
    right, bottom = left + w * CELL, top - h * CELL
    # the grid covers the asked extent and overshoots it by less than one cell on each side
    assert left <= x0 < left + CELL and right - CELL < x1 <= right
    assert bottom <= y0 < bottom + CELL and top - CELL < y1 <= top
    assert np.isfinite(values).all()
    ref = engine_run("""
        import eoembed, numpy as np
        e = eoembed.get_embedding("rcf", eoembed.BBox(*ARGS["box"], crs="EPSG:32632"),
                                  output=eoembed.OutputSpec.grid(), source=ARGS["tile"])
        np.save(ARGS["out"], e.to_numpy())
        t = e.transform
        print(json.dumps([t.c, t.a, t.b, t.f, t.d, t.e]))
    """, box=[x0, y0, x1, y1], tile=str(tile), out=str(tmp_path / "ref.npy"))
    assert tuple(ref) == tuple(transform)
    np.testing.assert_allclose(values, np.load(tmp_path / "ref.npy"), rtol=1e-5, atol=1e-6)


# -- similarity map ---------------------------------------------------------------------------
def _cosine(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    flat = values.reshape(values.shape[0], -1)
    sim = ref @ flat / (np.linalg.norm(ref) * np.linalg.norm(flat, axis=0))
    return sim.reshape(values.shape[1:])


def test_similarity_map_from_a_point(processing, area_grid: Path, tmp_path: Path) -> None:
    values, transform, _ = read(area_grid)
    row, col = 5, 7
    x, y = transform * (col + 0.3, row + 0.6)
    out = tmp_path / "sim.tif"
    processing.run("eoembed:similaritymap", {
        "INPUT": str(area_grid), "POINT": f"{x},{y} [EPSG:32632]", "OUTPUT": str(out)})
    sim, t_out, crs = read(out)
    assert sim.shape == (1, *values.shape[1:]) and crs == "EPSG:32632" and tuple(t_out) == tuple(transform)
    assert sim[0, row, col] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(sim[0], _cosine(values, values[:, row, col]), atol=1e-5)


def test_similarity_map_from_selected_reference_features(processing, area_grid: Path, tmp_path: Path) -> None:
    values, transform, _ = read(area_grid)
    # a box holding the centres of rows 2..4 and columns 3..5, and a second (unselected) far box
    x0, y1 = transform * (3.1, 2.1)
    x1, y0 = transform * (5.9, 4.9)
    layer = QgsVectorLayer("Polygon?crs=EPSG:32632", "refs", "memory")
    boxes = []
    for wkt in (f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))",
                f"POLYGON(({x0 + 400} {y0},{x1 + 400} {y0},{x1 + 400} {y1},{x0 + 400} {y1},{x0 + 400} {y0}))"):
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        boxes.append(f)
    layer.dataProvider().addFeatures(boxes)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([next(layer.getFeatures()).id()])
    out = tmp_path / "sim_ref.tif"
    processing.run("eoembed:similaritymap", {
        "INPUT": str(area_grid), "FEATURES": QgsProcessingFeatureSourceDefinition(layer.id(), True),
        "OUTPUT": str(out)})
    sim, _, _ = read(out)
    ref = values[:, 2:5, 3:6].reshape(values.shape[0], -1).mean(axis=1)
    np.testing.assert_allclose(sim[0], _cosine(values, ref), atol=1e-5)


def test_similarity_map_outside_the_grid_is_a_clear_error(processing, area_grid: Path) -> None:
    _, transform, _ = read(area_grid)
    with pytest.raises(QgsProcessingException, match="outside the grid"):
        processing.run("eoembed:similaritymap", {
            "INPUT": str(area_grid), "POINT": f"{transform.c - 500},{transform.f} [EPSG:32632]",
            "OUTPUT": "TEMPORARY_OUTPUT"})


# -- clusters ---------------------------------------------------------------------------------
def test_cluster_embeddings_gives_k_repeatable_classes(processing, area_grid: Path, tmp_path: Path) -> None:
    values, transform, _ = read(area_grid)
    outs = []
    for name in ("a.tif", "b.tif"):  # the same parameters twice, as batch mode would run them
        processing.run("eoembed:clusterembeddings", {
            "INPUT": str(area_grid), "K": 3, "SEED": 4, "OUTPUT": str(tmp_path / name)})
        outs.append(read(tmp_path / name))
    labels, t_out, crs = outs[0]
    assert tuple(t_out) == tuple(transform) and crs == "EPSG:32632" and labels.shape == (1, *values.shape[1:])
    assert set(np.unique(labels)) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(labels, outs[1][0])
    # every cell is nearer its own cluster's mean than any other (a k-means fixed point)
    x = values.reshape(values.shape[0], -1).T
    lab = labels.reshape(-1).astype(int)
    centres = np.stack([x[lab == j].mean(axis=0) for j in range(3)])
    d = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert (d.argmin(axis=1) == lab).mean() > 0.99
    sizes = np.bincount(lab)
    assert list(sizes) == sorted(sizes, reverse=True)


# -- PCA view -------------------------------------------------------------------------------
def test_pca_view_colours_follow_the_first_principal_component(processing, area_grid: Path, tmp_path: Path) -> None:
    values, transform, _ = read(area_grid)
    processing.run("eoembed:pcaview", {"INPUT": str(area_grid), "OUTPUT": str(tmp_path / "pca.tif")})
    rgb, t_out, crs = read(tmp_path / "pca.tif")
    assert rgb.shape == (3, *values.shape[1:]) and tuple(t_out) == tuple(transform) and crs == "EPSG:32632"
    assert rgb.min() >= 1 and rgb.max() <= 255  # every cell has data: no 0 (nodata)
    x = values.reshape(values.shape[0], -1).T
    x = x - x.mean(axis=0)
    pc1 = x @ np.linalg.svd(x, full_matrices=False)[2][0]
    r = np.corrcoef(pc1, rgb[0].reshape(-1))[0, 1]
    assert abs(r) > 0.95  # red is PC1, stretched (clipped at 2 / 98 %)


# -- graphical model --------------------------------------------------------------------------
def test_graphical_model_chains_embed_area_into_clusters(processing, tile: Path, tile_bounds, tmp_path: Path) -> None:
    model = QgsProcessingModelAlgorithm("embed and cluster", "eoembed tests")
    model.addModelParameter(QgsProcessingParameterFile("imagery", "Imagery"), QgsProcessingModelParameter("imagery"))
    model.addModelParameter(QgsProcessingParameterFeatureSource("area", "Area"), QgsProcessingModelParameter("area"))
    embed = QgsProcessingModelChildAlgorithm("eoembed:embedarea")
    embed.setChildId("embed")
    embed.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("area")])
    embed.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue("rcf")])
    embed.addParameterSources("IMAGERY", [QgsProcessingModelChildParameterSource.fromModelParameter("imagery")])
    embed.addParameterSources("OUTPUT", [QgsProcessingModelChildParameterSource.fromStaticValue("TEMPORARY_OUTPUT")])
    model.addChildAlgorithm(embed)
    cluster = QgsProcessingModelChildAlgorithm("eoembed:clusterembeddings")
    cluster.setChildId("cluster")
    cluster.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("embed", "OUTPUT")])
    cluster.addParameterSources("K", [QgsProcessingModelChildParameterSource.fromStaticValue(2)])
    cluster.addParameterSources("SEED", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    out = QgsProcessingModelOutput("classes", "Classes")
    out.setChildOutputName("OUTPUT")
    out.setChildId("cluster")
    cluster.setModelOutputs({"classes": out})
    model.addChildAlgorithm(cluster)
    model.updateDestinationParameters()
    assert any(isinstance(p, QgsProcessingParameterRasterDestination) for p in model.parameterDefinitions())
    # the area is a 400 m polygon: Embed area covers its extent (output "grid_extent")
    x0, y0, _, _ = area_extent(tile_bounds)
    area = QgsVectorLayer("Polygon?crs=EPSG:32632", "area", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, y0, x0 + 400, y0 + 400)))
    area.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(area)
    dest = tmp_path / "classes.tif"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, res = model.run({"imagery": str(tile), "area": area.id(), "cluster:classes": str(dest)},
                        context, QgsProcessingFeedback())
    assert ok, res
    labels, transform, crs = read(dest)
    # a 400 m square 413 m / 417 m off the tile's pixel lattice touches 11 cells of 40 m a side
    n = math.ceil((x0 + 400 - tile_bounds[0]) / CELL) - math.floor((x0 - tile_bounds[0]) / CELL)
    assert n == 11
    assert crs == "EPSG:32632" and transform.a == CELL and labels.shape[1:] == (n, n)
    assert transform.c <= x0 < transform.c + CELL and transform.f - CELL < y0 + 400 <= transform.f
    assert set(np.unique(labels)) == {0.0, 1.0}


# -- styles -----------------------------------------------------------------------------------
def test_output_styles(processing, area_grid: Path, tmp_path: Path) -> None:
    from eoembed_qgis.styles import StylePostProcessor, cluster_renderer, similarity_renderer
    from qgis.core import QgsPalettedRasterRenderer, QgsSingleBandPseudoColorRenderer

    processing.run("eoembed:clusterembeddings", {
        "INPUT": str(area_grid), "K": 4, "SEED": 0, "OUTPUT": str(tmp_path / "c.tif")})
    layer = QgsRasterLayer(str(tmp_path / "c.tif"), "c")
    r = cluster_renderer(layer)
    assert [c.value for c in r.classes()] == [0, 1, 2, 3]
    assert len({c.color.name() for c in r.classes()}) == 4
    sim = similarity_renderer(layer, -1.0, 1.0)
    items = sim.shader().rasterShaderFunction().colorRampItemList()
    lo, hi = items[0].color, items[-1].color
    assert lo.blue() > lo.red() and hi.red() > hi.blue()  # blue = unlike, red = like
    # what QGIS calls when it loads a Processing output
    StylePostProcessor.create("clusters", 4).postProcessLayer(layer, QgsProcessingContext(), QgsProcessingFeedback())
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    StylePostProcessor.create("similarity").postProcessLayer(layer, QgsProcessingContext(), QgsProcessingFeedback())
    assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer)
