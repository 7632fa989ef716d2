"""Figures drawn without pyplot: a Figure on its own Agg canvas, so importing or plotting never
switches the user's matplotlib backend or touches pyplot's global figure list (as detectron2's
Visualizer draws)."""
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(**kwargs) -> Figure:
    """`matplotlib.figure.Figure(**kwargs)` attached to an Agg canvas (PNG output)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def palette(name: str = "tab10"):
    """The colors of a qualitative colormap, e.g. tab10's ten."""
    return colormaps[name].colors
