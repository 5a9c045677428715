"""Dependencies injected into the routes; tests override them."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from labelwright.core.settings import Settings
from labelwright.core.storage import Store
from sqlalchemy.orm import Session

from ..orchestrator import Orchestrator

bearer = HTTPBearer(auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_orchestrator(request: Request) -> Orchestrator:
    return request.app.state.orchestrator


def get_session(request: Request):
    with request.app.state.sessions() as session:
        yield session


def get_publish(request: Request):
    return request.app.state.publisher.publish_task


def require_api_key(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]):
    """Mutating calls need ``Authorization: Bearer KEY`` with a key from ``LABELWRIGHT_API_KEYS``."""
    keys = request.app.state.settings.api_key_set
    if not keys:
        return
    if credentials is None:
        raise HTTPException(401, "this call needs an API key: send Authorization: Bearer KEY",
                            headers={"WWW-Authenticate": "Bearer"})
    if not any(secrets.compare_digest(credentials.credentials, k) for k in keys):
        raise HTTPException(403, "unknown API key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
SessionDep = Annotated[Session, Depends(get_session)]
PublishDep = Annotated[object, Depends(get_publish)]
ApiKey = Depends(require_api_key)
