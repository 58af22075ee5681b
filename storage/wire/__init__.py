"""Twilio's wire, known once: error codes and messages, dates, and the fields both edges render.

The REST edge (app/), the SDK's tunnelled CDS API (realtime/cds.py) and webhooks all speak Twilio's
formats. They live here, in the one package every edge may import (realtime may not import app),
and nothing here does I/O: errors.py (every Twilio error code the server answers, and the table from
each storage error to its REST and CDS answer), dates.py (the two date formats), jsontext.py
(compact JSON, one encoder each), fields.py (the object and item fields REST and CDS share).
"""
