"""The API's routes, one APIRouter per area; starter/api.py includes them into the app."""
