from happ_admin.app import create_app
from happ_admin.settings import AdminSettings
from happ_common.service_runtime import run_service

run_service("admin", AdminSettings, create_app)
