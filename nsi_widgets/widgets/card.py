"""NeuronCard: the Explorer's card alone (one neuron in detail, with an annotation editor)."""
from __future__ import annotations

from ._linked import DisplayOptions, LinkedWidget


class NeuronCard(LinkedWidget):
    """One neuron large: Neuron Feature, indexes, class-frequency bars, top crops with activations
    (and grey activations), other methods' views, and an annotation editor.

    The Explorer's front end showing only its card (with its own layer control); its previous and
    next buttons step through the units in id order.

    Parameters
    ----------
    idx : NeuronIndex
    layer : str, optional
        Default: the first indexed layer.
    unit : int
        Unit (channel) id in the layer.
    annotations : AnnotationStore or path, optional
        Where the editor saves label, note and tags (author: the store's default, or
        :attr:`author`). Without a store the editor is read-only.
    n_crops : int
        How many top crops the mosaic shows.
    crop_px, nf_px : int
        Largest side in pixels of each crop and of the Neuron Feature sent to the browser.
    top_k : int
        Classes shown in the class-frequency bars.
    show_classes : bool
        Show the class-frequency bars.
    """

    _VIEWS = ("card",)

    def __init__(self, idx, layer: str | None = None, unit: int = 0, annotations=None, *,
                 n_crops: int = 12, crop_px: int = 64, nf_px: int = 192, top_k: int = 8,
                 show_classes: bool = True):
        options = DisplayOptions(n_crops=int(n_crops), crop_px=int(crop_px), nf_px=int(nf_px), top_k=int(top_k))
        super().__init__(idx, annotations, layer=layer, unit=unit, sort_by="unit", descending=False,
                         options=options, hide_views=() if show_classes else ("classes",))

    def show(self, layer: str | None = None, unit: int | None = None) -> None:
        """Show ``unit`` of ``layer`` (either may be left as is), validated together."""
        self.show_unit(layer, unit)

    @property
    def annotation(self) -> dict:
        """The annotation of the unit shown by :attr:`author` (label, note, tags, author, time)."""
        return dict(self.annotations.get(self.layer, {}).get(str(self.unit), {}))

    @property
    def dead(self) -> bool:
        """Whether the unit shown is dead."""
        return bool(self.layer_index.dead[self.unit])

    def refresh(self) -> None:
        """Re-read the annotations from the store."""
        self.refresh_annotations(force=True)

    def __repr__(self) -> str:
        return f"NeuronCard(layer={self.layer!r}, unit={self.unit}, dead={self.dead})"
