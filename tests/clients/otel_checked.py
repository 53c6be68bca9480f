"""What the OpenTelemetry SDK scripts share: an exporter wrapper that
records the exports that failed (in `failed`)."""

failed = []


class Checked:
    """Wraps an exporter and records a failed export."""

    def __init__(self, name, exporter):
        self.name, self.exporter = name, exporter

    def __getattr__(self, attr):
        return getattr(self.exporter, attr)

    def export(self, *args, **kwargs):
        result = self.exporter.export(*args, **kwargs)
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            failed.append(self.name)
        return result
