"""The realtime gateway (WebSocket, twilio-sync protocol). Built in the realtime issue."""

__all__: list[str] = []
