"""Run with: python -m wsframe run samples.book.main:app  (then open http://127.0.0.1:8000/)."""

from samples.book.urls import urls
from wsframe import create_app

app = create_app(urls)
