"""Precision and recall of the PII redactor on its labelled cases."""
