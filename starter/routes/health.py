"""Liveness and readiness probes."""
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request):
    try:
        await request.app.state.pool.fetchval("SELECT 1")
        await request.app.state.temporal.service_client.check_health()
    except Exception as e:  # readiness reports, never raises
        return JSONResponse({"status": "not ready", "error": str(e)}, status_code=503)
    return {"status": "ready"}
