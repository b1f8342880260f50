"""Survival metrics."""
