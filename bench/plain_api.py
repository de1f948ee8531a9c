"""The HTTP front of the bench's plain contenders: the orchestrator's `POST /orders` shape
(validated by pydantic, priced from an in-memory catalog, the order row stored), then whatever
the contender starts, inline; `GET /orders/{id}` for the load driver's final read.

Served by uvicorn as the orchestrator's API is (httptools and uvloop, no access log).
"""
import uuid
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import Engine

from bench import effects


class LineIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class OrderIn(BaseModel):
    customer_email: EmailStr
    items: list[LineIn] = Field(min_length=1, max_length=100)
    payment_token: str = Field(min_length=1, max_length=64)


def make_api(orders_db: Engine, start: Callable[[dict[str, Any]], None]) -> FastAPI:
    """`start(order)` sets the order going once its row is stored."""
    api = FastAPI(title="plain orders")

    # plain `def`: FastAPI runs it in its thread pool, as the orchestrator's POST is run
    @api.post("/orders", status_code=202)
    def post_order(body: OrderIn) -> JSONResponse:
        items = [line.model_dump() for line in body.items]
        total = effects.price(items)
        if total is None:
            raise HTTPException(422, "unknown sku")
        order = {"id": str(uuid.uuid4()), "customer_email": str(body.customer_email),
                 "items": items, "total_cents": total, "currency": effects.CURRENCY,
                 "payment_token": body.payment_token, "created_at": effects.now()}
        effects.store_order(orders_db, order)
        start(order)
        return JSONResponse({"id": order["id"], "status": "pending"}, status_code=202,
                            headers={"Location": f"/orders/{order['id']}"})

    @api.get("/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, Any]:
        found = effects.read_order(orders_db, order_id)
        if found is None:
            raise HTTPException(404, "no such order")
        return found

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


def serve(api: FastAPI, host: str, port: int) -> None:
    uvicorn.run(api, host=host, port=port, log_level="info", access_log=False)
