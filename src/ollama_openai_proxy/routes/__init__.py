"""Thin HTTP handlers: parse -> translate -> call -> translate."""
