"""Discord gateways: the voice gateway v8 (:mod:`wavegate.discord.voice`)."""
