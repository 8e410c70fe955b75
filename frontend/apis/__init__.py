"""The APIs the frontend speaks, one package each (wire models, mapping to the one
validated request, rendering of the service's events, router); see frontend.apis.api."""
