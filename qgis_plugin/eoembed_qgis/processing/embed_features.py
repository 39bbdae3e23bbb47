"""Processing algorithm: one embedding vector per feature, as new fields of a copy of the layer."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingUtils,
    QgsVectorLayer,
)

from ..compat import DOUBLE, STRING
from ..icons import icon
from . import engine_job

ID_FIELD = "eoembed_id"


def read_pooled(path: str) -> dict[str, list[float]]:
    """The worker's GeoPackage of pooled vectors as {feature id: [e0, e1, …]}."""
    layer = QgsVectorLayer(f"{path}|layername={Path(path).stem}", "pooled", "ogr")
    if not layer.isValid():
        layer = QgsVectorLayer(path, "pooled", "ogr")
    if not layer.isValid():
        raise QgsProcessingException(f"eoembed: the result file {path} could not be read")
    names = [f.name() for f in layer.fields()]
    dims = sorted((n for n in names if n[:1] == "e" and n[1:].isdigit()), key=lambda n: int(n[1:]))
    idx = [names.index(n) for n in dims]
    id_idx = names.index("id")
    return {str(f.attributes()[id_idx]): [float(f.attributes()[i]) for i in idx] for f in layer.getFeatures()}


class EmbedFeaturesAlgorithm(QgsProcessingAlgorithm):
    """Embed every (selected) feature of a vector layer with a model; vectors become fields."""

    INPUT, OUTPUT = "INPUT", "OUTPUT"

    def name(self) -> str:
        return "embedfeatures"

    def displayName(self) -> str:  # noqa: N802
        return "Embed features"

    def group(self) -> str:
        return "Embeddings"

    def icon(self):
        return icon("embed")

    def groupId(self) -> str:  # noqa: N802
        return "embeddings"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Embeds each feature of the input layer (points as squares of the given buffer, "
            "polygons masked to their outline) with the chosen remote-sensing foundation model, "
            "over the time window, from the given imagery. The output is a copy of the features "
            f"with a field <i>{ID_FIELD}</i> and one field per embedding dimension "
            "(<i>e0</i>, <i>e1</i>, …). Tick <i>Selected features only</i> to embed just the "
            "selection. Features that cannot be embedded are reported and left out. "
            "The engine runs in its own process; Cancel stops it at once."
        )

    def createInstance(self) -> EmbedFeaturesAlgorithm:  # noqa: N802
        return EmbedFeaturesAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.INPUT, "Features to embed", [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        engine_job.add_model_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Embedded features"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        if not source.sourceCrs().isValid():
            raise QgsProcessingException("the input layer has no CRS; set one in its properties")
        job = engine_job.base_job(self, parameters, context, "features")
        features: dict[str, QgsFeature] = {}
        places = []
        for f in source.getFeatures():
            if feedback.isCanceled():
                raise QgsProcessingException("eoembed: the job was cancelled")
            if not f.hasGeometry() or f.geometry().isEmpty():
                feedback.reportError(f"feature {f.id()} has no geometry and is skipped")
                continue
            features[str(f.id())] = QgsFeature(f)
            places.append({"id": str(f.id()), "wkt": f.geometry().asWkt(17)})
        if not places:
            raise QgsProcessingException("there are no features to embed (is the selection empty?)")
        job.update(places=places, crs=engine_job.crs_text(source.sourceCrs()), output="pooled")
        result = engine_job.run(job, feedback)
        vectors = read_pooled(result["pooled"])
        engine_job.remove_outputs(result)
        dim = len(next(iter(vectors.values())))
        extra = QgsFields()
        extra.append(QgsField(ID_FIELD, STRING))
        for i in range(dim):
            extra.append(QgsField(f"e{i}", DOUBLE))
        fields = QgsProcessingUtils.combineFields(source.fields(), extra)
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, source.wkbType(), source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for fid, f in features.items():
            if fid not in vectors:
                continue
            out = QgsFeature(fields)
            out.setGeometry(f.geometry())
            out.setAttributes(list(f.attributes()) + [fid] + vectors[fid])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        feedback.pushInfo(f"embedded {len(vectors)} of {len(features)} features ({dim} dimensions)")
        return {self.OUTPUT: dest}
