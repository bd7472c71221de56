"""Parts of the MRSuperRes panel kept beside the module file: the model list, map overlay and
training sections (mixins of the widget) and Slicer's self-test. Imported only inside the Slicer
application."""
