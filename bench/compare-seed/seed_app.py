"""The original package's documented FastAPI integration, for the comparison.

`fastapi-orm` 0.11.0 as its DISTRIBUTED_CACHE.md shows it ("Advanced Usage → FastAPI
Integration", "Event-Based" invalidation): a `Database` on SQLite, a global cache made
on start-up, `GET /users/{id}` read through the cache, `PATCH /users/{id}` through
`User.update_by_id` with a `post_save` receiver that deletes `user:{id}` and clears
`users:list:*`. The only deviation from the page: the cached value is
`user.to_dict()`, because the page's `user.to_response()` (a pydantic model) is not
JSON and would be cached as its `str()`.

Settings from the environment:
  SEED_CACHE     distributed | hybrid   (DistributedCache alone, or HybridCache(QueryCache, DistributedCache))
  REDIS_URL      redis://127.0.0.1:6379
  DATABASE_URL   sqlite+aiosqlite:///seed.db
"""

import os
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_orm import (
    Database,
    DistributedCache,
    HybridCache,
    IntegerField,
    Model,
    QueryCache,
    StringField,
    get_signals,
    receiver,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///seed.db")
MODE = os.environ.get("SEED_CACHE", "distributed")


class User(Model):
    __tablename__ = "users"
    id: int = IntegerField(primary_key=True)
    name: str = StringField(max_length=200, nullable=False)
    email: str = StringField(max_length=254, nullable=False)


class UserPatch(BaseModel):
    name: Optional[str] = None
    email: Optional[str] = None


class UserCreate(BaseModel):
    name: str
    email: str


app = FastAPI()
db = Database(DATABASE_URL)

_cache = None


async def get_cache():
    global _cache
    if _cache is None:
        l2 = await DistributedCache.create(redis_url=REDIS_URL, key_prefix="seed")
        if MODE == "hybrid":
            _cache = HybridCache(QueryCache(max_size=1000, default_ttl=60), l2)
        else:
            _cache = l2
    return _cache


async def get_db():
    async for session in db.get_session():
        yield session


@app.on_event("startup")
async def startup():
    await db.create_tables()
    await get_cache()


@app.on_event("shutdown")
async def shutdown():
    cache = await get_cache()
    l2 = cache.l2 if isinstance(cache, HybridCache) else cache
    await l2.close()
    await db.close()


signals = get_signals()


@receiver(signals.post_save, sender=User)
async def invalidate_user_cache(sender, instance, created, **kwargs):
    cache = await get_cache()
    await cache.delete(f"user:{instance.id}")
    await cache.clear_pattern("users:list:*")


@app.get("/users/{user_id}")
async def get_user(
    user_id: int,
    session: AsyncSession = Depends(get_db),
    cache=Depends(get_cache),
):
    cache_key = f"user:{user_id}"
    user_data = await cache.get(cache_key)
    if user_data is not None:
        return user_data
    user = await User.get(session, user_id)
    if user:
        user_data = user.to_dict()
        await cache.set(cache_key, user_data, ttl=300)
        return user_data
    raise HTTPException(status_code=404, detail="User not found")


@app.post("/users", status_code=201)
async def create_user(
    body: UserCreate,
    session: AsyncSession = Depends(get_db),
):
    user = await User.create(session, **body.model_dump())
    return user.to_dict()


@app.patch("/users/{user_id}")
async def patch_user(
    user_id: int,
    body: UserPatch,
    session: AsyncSession = Depends(get_db),
):
    fields = body.model_dump(exclude_none=True)
    user = await User.update_by_id(session, user_id, **fields)
    if user is None:
        raise HTTPException(status_code=404, detail="User not found")
    return user.to_dict()
