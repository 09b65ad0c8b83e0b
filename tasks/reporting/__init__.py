"""The report renderer: plain functions from metrics and tables to report files, apart from the stages.

render.py lays out the evaluation and cross-validation reports (tables,
Jinja2 templates in templates/, JSON) and plots.py draws their PNGs. No
Prefect and no data root here: tasks/report.py and tasks/crossval.py read the
inputs, write the files and publish the artifacts.
"""
