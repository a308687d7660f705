"""OpenAI-compatible routes (filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

from harness.server.generation import Service


def build_router(svc: Service) -> APIRouter:
    return APIRouter()
