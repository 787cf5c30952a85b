from happ_common.service_runtime import run_service
from happ_delivery.app import create_app
from happ_delivery.settings import DeliverySettings

run_service("delivery", DeliverySettings, create_app)
