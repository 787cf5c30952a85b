from happ_common.service_runtime import serve
from happ_ingress.app import create_app
from happ_ingress.settings import IngressSettings

settings = IngressSettings()
serve(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    service="ingress",
)
