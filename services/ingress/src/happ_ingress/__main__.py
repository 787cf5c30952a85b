from happ_common.service_runtime import run_service
from happ_ingress.app import create_app
from happ_ingress.settings import IngressSettings

run_service("ingress", IngressSettings, create_app)
