"""The faces: the ``livecart`` command line and the demo."""
