SET DateStyle = 'ISO, MDY'
