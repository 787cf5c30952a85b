from happ_common.service_runtime import serve
from happ_delivery.app import create_app
from happ_delivery.settings import DeliverySettings

settings = DeliverySettings()
serve(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    service="delivery",
)
