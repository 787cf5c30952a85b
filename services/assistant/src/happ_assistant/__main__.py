from happ_assistant.app import create_app
from happ_assistant.settings import AssistantServiceSettings
from happ_common.service_runtime import serve

settings = AssistantServiceSettings()
serve(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    service="assistant",
)
