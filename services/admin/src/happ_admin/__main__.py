from happ_admin.app import create_app
from happ_admin.settings import AdminSettings
from happ_common.service_runtime import serve

settings = AdminSettings()
serve(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    service="admin",
)
