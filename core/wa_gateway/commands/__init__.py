"""The built-in commands that are plugins: each module registers its command through
the `register_commands` hook, exactly as a third-party plugin would (see
plugins.DEFAULT_PLUGINS). `connect` is what every one-shot command uses to reach
RabbitMQ."""
