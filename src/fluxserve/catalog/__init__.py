"""The model catalog: which models are served (``registry``), their input fields and validation (``fields``),
image sizes (``sizes``), the OpenAPI rendering (``openapi``) and the built-in FLUX inputs (``flux``)."""
