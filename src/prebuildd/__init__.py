"""prebuildd: warm pools of prebuilt workspaces, kept at their targets by a reconcile loop."""

__version__ = "0.1.0"
