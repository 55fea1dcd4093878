"""The "ImageNet datasets" pages in the Airflow UI (see imagenet_datasets_plugin.py).

data.py finds versions in the metadata DB and reads them through imagenet_beam's storage
layer, pages.py renders HTML, app.py is the FastAPI app behind Airflow's own auth.
"""
