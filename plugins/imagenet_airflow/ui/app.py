"""The FastAPI app behind the pages, mounted by Airflow's API server at ui.URL_PREFIX.

Every route requires an authenticated Airflow user allowed to read the imagenet2012 DAG
(Airflow's own `requires_access_dag`: a JWT as `Authorization: Bearer`, or the `_token`
cookie the UI's login sets, which the UI's iframe sends since it is the same origin).
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse

from imagenet_airflow.ui import data, pages

# Headers on everything served: no sniffing, no framing by other sites, and served
# HTML (the report) runs no script in Airflow's origin.
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
REPORT_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
              "font-src 'self' data:; frame-ancestors 'self'")
PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'")

app = FastAPI(
    title="ImageNet datasets",
    description="The imagenet2012 DAG's published versions and each run's dataset.",
    dependencies=[Depends(requires_access_dag("GET", param_dag_id=data.DAG_ID))],
    # FastAPI adds its docs routes without the app's dependencies: none, so nothing is public
    docs_url=None, redoc_url=None, openapi_url=None,
)


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code,
                        headers={**SAFE_HEADERS, "Content-Security-Policy": PAGE_CSP})


@app.get("/", response_class=HTMLResponse)
def versions(session: SessionDep) -> HTMLResponse:
    """Every version the DAG's Asset events recorded, with what is there now."""
    pubs = data.publications(session)
    states = {d: data.read_version(d) for d in {p.version_dir for p in pubs}}
    return _html(pages.versions_page(pubs, states))


@app.get(
    "/runs",
    response_class=HTMLResponse,
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN,
                                              param_dag_id=data.DAG_ID))],
)
def run_tab(session: SessionDep, dag_id: str = Query(), run_id: str = Query()) -> HTMLResponse:
    """A DAG run's dataset (the run page's "ImageNet dataset" tab)."""
    if dag_id != data.DAG_ID:
        return _html(pages.message_page(
            "ImageNet dataset",
            f"This tab shows the datasets of <code>{data.DAG_ID}</code> runs; "
            "this run is of another DAG."))
    run = data.dag_run(session, dag_id, run_id)
    if run is None:
        return _html(pages.message_page("ImageNet dataset", "No such run."), 404)
    pubs = data.publications(session, run_id=run_id)
    pub = pubs[0] if pubs else None
    state = data.read_version(pub.version_dir) if pub else None
    return _html(pages.run_page(run, pub, state))


@app.get("/events/{event_id}/files/{name}")
def version_file(event_id: int, name: str, session: SessionDep) -> Response:
    """A file of the version an Asset event recorded, if its completion marker lists it.

    The version directory comes from the event's row in the metadata DB; `name` is only
    compared with the fixed names in data.SERVED_TYPES and the marker's list."""
    version_dir = data.version_dir_of_event(session, event_id)
    if version_dir is None or not data.servable(version_dir, name):
        raise HTTPException(status_code=404, detail="No such file in this version")
    headers = dict(SAFE_HEADERS)
    if name == data.REPORT_HTML:
        headers["Content-Security-Policy"] = REPORT_CSP
    return Response(data.read_file(version_dir, name), media_type=data.SERVED_TYPES[name],
                    headers=headers)
