"""The Airflow side of the ImageNet pipeline: the archive sensor, the tasks' logic, lineage.

Kept out of the DAG file so that parsing stays light; the data work itself lives in the
`imagenet_beam` package.
"""
