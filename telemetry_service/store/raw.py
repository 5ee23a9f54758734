"""Bulk reads through the database driver's own cursor.

A long run's energy needs hundreds of thousands of rows; SQLAlchemy's result objects cost microseconds per row
on top of the driver, and numpy probing each Row for array protocols costs far more. The queries stay
SQLAlchemy statements (compiled for the connection's dialect); only the fetching is the driver's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql import Select


def fetch_tuples(session: Session, query: Select[Any]) -> list[tuple[Any, ...]]:
    """Rows of `query` as plain tuples. Its parameters are inlined, so they must be numbers, not user text."""
    conn = session.connection()
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})))
        return cursor.fetchall()
    finally:
        cursor.close()
