"""Draft (edge) role: proposes windows with the small model, drives verification, serves the OpenAI API."""
